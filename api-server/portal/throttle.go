package portal

import (
	"strings"
	"sync"
	"time"
)

// Login throttling: after loginFailures wrong passwords for one user from
// one address within loginWindow, the portal refuses that pair's logins
// (without asking the identity service) until the window since the first
// of them has passed. Per user and address, so a stranger guessing cannot
// lock the user out everywhere, and one address cannot try many passwords
// on a user; the identity service has its own per-address limits besides.
const (
	loginFailures = 5
	loginWindow   = 15 * time.Minute
	// maxLoginKeys bounds the table: beyond it, the oldest entries go.
	maxLoginKeys = 10000
)

type loginCount struct {
	n     int
	first time.Time
}

type loginLimiter struct {
	mu    sync.Mutex
	now   func() time.Time
	count map[string]*loginCount
}

func newLoginLimiter(now func() time.Time) *loginLimiter {
	return &loginLimiter{now: now, count: map[string]*loginCount{}}
}

func loginKey(user, addr string) string { return strings.ToLower(user) + "\x00" + addr }

// blocked returns how long user from addr must wait, 0 if not blocked.
func (l *loginLimiter) blocked(user, addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.count[loginKey(user, addr)]
	if c == nil || c.n < loginFailures {
		return 0
	}
	wait := c.first.Add(loginWindow).Sub(l.now())
	if wait <= 0 {
		delete(l.count, loginKey(user, addr))
		return 0
	}
	return wait
}

// failed counts a refused login.
func (l *loginLimiter) failed(user, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	k := loginKey(user, addr)
	c := l.count[k]
	if c == nil || now.Sub(c.first) > loginWindow {
		if len(l.count) >= maxLoginKeys {
			l.dropExpired(now)
		}
		c = &loginCount{first: now}
		l.count[k] = c
	}
	c.n++
}

// dropExpired forgets counts whose window has passed, and if the table
// is still full the oldest ones.
func (l *loginLimiter) dropExpired(now time.Time) {
	var oldest string
	for k, c := range l.count {
		if now.Sub(c.first) > loginWindow {
			delete(l.count, k)
		} else if oldest == "" || c.first.Before(l.count[oldest].first) {
			oldest = k
		}
	}
	if len(l.count) >= maxLoginKeys && oldest != "" {
		delete(l.count, oldest)
	}
}

// succeeded forgets the pair's failures.
func (l *loginLimiter) succeeded(user, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.count, loginKey(user, addr))
}
