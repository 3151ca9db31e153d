package shadowpw

import (
	"os/exec"
	"strings"
	"testing"
)

// The specification's own test vectors for "$6$" without rounds=.
func TestCryptVectors(t *testing.T) {
	for _, v := range []struct{ salt, pw, want string }{
		{"saltstring", "Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
	} {
		if got := crypt([]byte(v.pw), []byte(v.salt)); got != v.want {
			t.Errorf("crypt(%q, %q) = %s, want %s", v.pw, v.salt, got, v.want)
		}
	}
}

// A hash made here is what openssl (glibc's algorithm) makes with its salt.
func TestHashMatchesOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	for _, pw := range []string{"s3cret-Pass", "x", strings.Repeat("long", 40)} {
		h, err := Hash(pw)
		if err != nil {
			t.Fatal(err)
		}
		salt := strings.Split(h, "$")[2]
		out, err := exec.Command("openssl", "passwd", "-6", "-salt", salt, pw).Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(out)) != h {
			t.Errorf("password %q: %s, openssl %s", pw, h, out)
		}
	}
}

func TestSetRoot(t *testing.T) {
	in := "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
	out, err := SetRoot([]byte(in), "$6$s$h", 20000)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "root:$6$s$h:20000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n" {
		t.Errorf("SetRoot = %q", out)
	}
	if _, err := SetRoot([]byte("daemon:*:1::::::\n"), "$6$s$h", 1); err != ErrNoRoot {
		t.Errorf("no root line: %v", err)
	}
	if _, err := SetRoot([]byte(in), "bad:hash", 1); err == nil {
		t.Error("a hash with ':' accepted")
	}
}

func TestVerify(t *testing.T) {
	h, err := Hash("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if !Verify("s3cret", h) {
		t.Errorf("Verify(s3cret, %s) = false", h)
	}
	for _, bad := range []struct{ pw, hash string }{{"s3creT", h}, {"s3cret", "*"}, {"s3cret", "$1$abc$def"}, {"s3cret", ""}} {
		if Verify(bad.pw, bad.hash) {
			t.Errorf("Verify(%q, %q) = true", bad.pw, bad.hash)
		}
	}
}
