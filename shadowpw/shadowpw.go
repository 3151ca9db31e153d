// Package shadowpw makes the password hash an /etc/shadow line holds
// (SHA-512 crypt, "$6$", Ulrich Drepper's specification, which glibc's
// crypt(3) implements) and puts one in root's line of a shadow file. The
// API hashes an adminPass so that only the hash travels to the host.
package shadowpw

import (
	"bytes"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

const itoa64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// rounds is crypt's default for "$6$" without a rounds= parameter.
const rounds = 5000

// Hash is password's SHA-512 crypt with a random 16-character salt.
func Hash(password string) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("shadowpw: salt: %w", err)
	}
	salt := make([]byte, 16)
	for i, v := range b {
		salt[i] = itoa64[int(v)%len(itoa64)]
	}
	return crypt([]byte(password), salt), nil
}

// Verify says whether hash ("$6$<salt>$...", without rounds=) is
// password's SHA-512 crypt.
func Verify(password, hash string) bool {
	rest, ok := strings.CutPrefix(hash, "$6$")
	if !ok {
		return false
	}
	salt, _, ok := strings.Cut(rest, "$")
	if !ok || strings.HasPrefix(salt, "rounds=") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(crypt([]byte(password), []byte(salt))), []byte(hash)) == 1
}

// crypt is "$6$<salt>$<hash>" of pw (the salt cut to 16 characters).
func crypt(pw, salt []byte) string {
	if len(salt) > 16 {
		salt = salt[:16]
	}
	b := sha512.New()
	b.Write(pw)
	b.Write(salt)
	b.Write(pw)
	sumB := b.Sum(nil)

	a := sha512.New()
	a.Write(pw)
	a.Write(salt)
	for i := len(pw); i > 0; i -= 64 {
		a.Write(sumB[:min(i, 64)])
	}
	for i := len(pw); i > 0; i >>= 1 {
		if i&1 != 0 {
			a.Write(sumB)
		} else {
			a.Write(pw)
		}
	}
	c := a.Sum(nil)

	dp := sha512.New()
	for range pw {
		dp.Write(pw)
	}
	p := repeat(dp.Sum(nil), len(pw))
	ds := sha512.New()
	for i := 0; i < 16+int(c[0]); i++ {
		ds.Write(salt)
	}
	s := repeat(ds.Sum(nil), len(salt))

	for i := 0; i < rounds; i++ {
		h := sha512.New()
		if i&1 != 0 {
			h.Write(p)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(s)
		}
		if i%7 != 0 {
			h.Write(p)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(p)
		}
		c = h.Sum(nil)
	}

	var out strings.Builder
	out.WriteString("$6$")
	out.Write(salt)
	out.WriteByte('$')
	enc := func(b2, b1, b0 byte, n int) {
		w := uint(b2)<<16 | uint(b1)<<8 | uint(b0)
		for ; n > 0; n-- {
			out.WriteByte(itoa64[w&0x3f])
			w >>= 6
		}
	}
	for i := 0; i < 21; i++ {
		switch i % 3 {
		case 0:
			enc(c[i], c[i+21], c[i+42], 4)
		case 1:
			enc(c[i+21], c[i+42], c[i], 4)
		default:
			enc(c[i+42], c[i], c[i+21], 4)
		}
	}
	enc(0, 0, c[63], 2)
	return out.String()
}

// repeat is sum repeated to n bytes.
func repeat(sum []byte, n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n {
		out = append(out, sum[:min(len(sum), n-len(out))]...)
	}
	return out
}

// ErrNoRoot: the shadow file has no line for root.
var ErrNoRoot = errors.New("the shadow file has no root entry")

// SetRoot returns shadow with root's password field set to hash and its
// last change to day (days since 1970-01-01); every other line and field
// as it was.
func SetRoot(shadow []byte, hash string, day int64) ([]byte, error) {
	if strings.ContainsAny(hash, ":\n") {
		return nil, errors.New("shadowpw: a hash with ':' or a newline")
	}
	lines := bytes.SplitAfter(shadow, []byte("\n"))
	found := false
	for i, l := range lines {
		body := bytes.TrimRight(l, "\n")
		f := strings.Split(string(body), ":")
		if len(f) < 3 || f[0] != "root" {
			continue
		}
		f[1], f[2] = hash, fmt.Sprint(day)
		lines[i] = append([]byte(strings.Join(f, ":")), l[len(body):]...)
		found = true
	}
	if !found {
		return nil, ErrNoRoot
	}
	return bytes.Join(lines, nil), nil
}
