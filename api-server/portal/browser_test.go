package portal

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

// The tests in this file drive the portal in headless Chromium against
// the fake APIs: what they check is layout and behaviour in a real
// browser (boxes, validation, script), which the HTTP-level tests cannot.

// chromium finds the browser (Debian's chromium; CAPSULE_TEST_CHROMIUM
// overrides), skipping the test without one unless CAPSULE_TEST_REQUIRE.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CAPSULE_TEST_CHROMIUM"), "/usr/bin/chromium"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("chromium")
	testenv.Require(t, err == nil, "chromium not installed (apt-get install chromium)")
	return p
}

// tab is a headless Chromium tab with its own profile on the portal at base.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
}

func newTab(t *testing.T, base string) *tab {
	t.Helper()
	exe := chromium(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &tab{t: t, ctx: ctx, base: base}
}

func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *tab) open(path string) { b.t.Helper(); b.do("open "+path, chromedp.Navigate(b.base+path)) }

// viewport sets the page's size: phone widths emulate a mobile device.
func (b *tab) viewport(w, h int) {
	b.t.Helper()
	if w < 600 {
		b.do("phone viewport", chromedp.EmulateViewport(int64(w), int64(h), chromedp.EmulateMobile))
		return
	}
	b.do("viewport", chromedp.EmulateViewport(int64(w), int64(h)))
}

func js[T any](b *tab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a boolean expression until it holds.
func (b *tab) waitJS(what, expr string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("%s: not true within %s: %s\npage: %s", what, timeout, expr, b.text("body"))
}

func (b *tab) text(sel string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q)||{}).innerText||""`, sel)))
	return s
}

// shot saves a screenshot of the page as name.png in the directory
// CAPSULE_PORTAL_SHOTS names (docs/ pictures are made this way); without
// it, nothing.
func (b *tab) shot(name string) {
	b.t.Helper()
	dir := os.Getenv("CAPSULE_PORTAL_SHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *tab) path() string { return js[string](b, `location.pathname + location.search`) }

// click clicks sel and waits for a page whose path starts with want.
func (b *tab) click(sel, want string) {
	b.t.Helper()
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
	b.waitJS("page "+want, fmt.Sprintf(`document.readyState === "complete" && (location.pathname + location.search).startsWith(%q)`, want), 10*time.Second)
}

func (b *tab) login(user string) {
	b.t.Helper()
	b.open("/login")
	b.logInHere(user)
}

// logInHere fills and sends the login form of the page open.
func (b *tab) logInHere(user string) {
	b.t.Helper()
	b.do("fill the login form",
		chromedp.SetValue(chromedp.CSS("#user"), user),
		chromedp.SetValue(chromedp.CSS("#password"), "secret"),
		chromedp.SetValue(chromedp.CSS("#project"), user))
	b.do("log in", chromedp.Click(chromedp.CSS(`#login button[type=submit]`)))
	b.waitJS("login answered", `document.readyState === "complete" && (!!document.querySelector("#who") || !!document.querySelector("#error"))`, 10*time.Second)
	if !strings.Contains(b.text("#who"), user) {
		b.t.Fatalf("login as %s: %s", user, b.text("body"))
	}
}
