package identity

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Lockout is the password-login throttle, Keystone's [security_compliance]
// lockout_failure_attempts / lockout_duration extended to the source
// address: after UserAttempts failed logins of one user, or SourceAttempts
// failed logins from one address, each within Duration of the first, that
// user or address is refused (401, as Keystone's lockout answers) for
// Duration, even with the right password. A success clears the user's
// count, not the address's. Zero attempts disable that throttle.
type Lockout struct {
	UserAttempts   int
	SourceAttempts int
	Duration       time.Duration
}

// DefaultLockout is the throttle of an identity service whose options say
// nothing.
func DefaultLockout() Lockout {
	return Lockout{UserAttempts: 10, SourceAttempts: 50, Duration: 5 * time.Minute}
}

// maxThrottleKeys bounds the memory of the address throttle: a spray from
// more addresses than this within Duration is not tracked beyond them.
const maxThrottleKeys = 1 << 16

// failures counts one key's failed logins.
type failures struct {
	count       int
	first       time.Time
	lockedUntil time.Time
}

// throttle counts failed logins per key (a user id or a source address).
type throttle struct {
	mu    sync.Mutex
	limit int
	dur   time.Duration
	keys  map[string]*failures
}

func newThrottle(limit int, dur time.Duration) *throttle {
	return &throttle{limit: limit, dur: dur, keys: map[string]*failures{}}
}

// locked reports whether key is refused at now.
func (t *throttle) locked(key string, now time.Time) bool {
	if t.limit <= 0 || key == "" {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.keys[key]
	return f != nil && now.Before(f.lockedUntil)
}

// fail counts a failed login of key at now.
func (t *throttle) fail(key string, now time.Time) {
	if t.limit <= 0 || key == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.keys[key]
	if f == nil {
		if len(t.keys) >= maxThrottleKeys {
			t.prune(now)
			if len(t.keys) >= maxThrottleKeys {
				return
			}
		}
		f = &failures{}
		t.keys[key] = f
	}
	if now.Sub(f.first) > t.dur && !now.Before(f.lockedUntil) {
		f.count, f.first = 0, now
	}
	f.count++
	if f.count >= t.limit {
		f.lockedUntil = now.Add(t.dur)
	}
}

// clear forgets key's failures (a successful login of that user).
func (t *throttle) clear(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.keys, key)
}

// prune drops keys whose window and lockout are over.
func (t *throttle) prune(now time.Time) {
	for k, f := range t.keys {
		if now.Sub(f.first) > t.dur && !now.Before(f.lockedUntil) {
			delete(t.keys, k)
		}
	}
}

// loginGuard holds the password-login defences of one identity service.
type loginGuard struct {
	users   *throttle
	sources *throttle

	rounds    int // the cost of the dummy hash: the stored hashes'
	dummyOnce sync.Once
	dummy     []byte
}

func newLoginGuard(l Lockout, rounds int) *loginGuard {
	return &loginGuard{users: newThrottle(l.UserAttempts, l.Duration), sources: newThrottle(l.SourceAttempts, l.Duration),
		rounds: rounds}
}

// checkPassword reports whether password matches hash. It spends the same
// bcrypt work whatever the case, so a guesser cannot tell an unknown user
// (hash ""), a user without a password, or a password too long for bcrypt
// from a wrong password by the time the answer takes.
func (g *loginGuard) checkPassword(hash, password string) bool {
	if hash == "" || len(password) > MaxPasswordBytes {
		g.dummyOnce.Do(func() {
			// Same cost as new hashes, so the work is the same.
			g.dummy, _ = bcrypt.GenerateFromPassword([]byte("capsule-no-such-user"), g.rounds)
		})
		_ = bcrypt.CompareHashAndPassword(g.dummy, []byte(truncateBytes(password, MaxPasswordBytes)))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

func truncateBytes(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// sourceAddress is the address a login came from: the peer, or, when the
// peer is this host (the portal logs its users in over loopback), the last
// address of X-Forwarded-For, which only a local process can set here.
func sourceAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			parts := strings.Split(xff, ",")
			if fwd := strings.TrimSpace(parts[len(parts)-1]); net.ParseIP(fwd) != nil {
				return fwd
			}
		}
	}
	return host
}
