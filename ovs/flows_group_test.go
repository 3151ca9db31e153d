package ovs_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/ovs/ovstest"
)

// ofctlRuns records the "ovs command" debug line of each ovs-ofctl process
// a Client runs (one line per process) and its batches attribute.
type ofctlRuns struct {
	mu      sync.Mutex
	batches []int64 // per run, in order
}

func (l *ofctlRuns) Enabled(context.Context, slog.Level) bool { return true }
func (l *ofctlRuns) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "ovs command" {
		return nil
	}
	n := int64(-1) // a run that is not an ApplyFlows
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "batches" {
			n = a.Value.Int64()
		}
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.batches = append(l.batches, n)
	return nil
}
func (l *ofctlRuns) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *ofctlRuns) WithGroup(string) slog.Handler      { return l }
func (l *ofctlRuns) runs() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.batches...)
}

// gatedClient is a Client whose ovs-ofctl waits, before it runs the real
// one, until open is called: a test holds a run under way while it queues
// other batches behind it. The bridges come from an ungated Client.
func gatedClient(t *testing.T, runs *ofctlRuns) (c *ovs.Client, open func()) {
	t.Helper()
	real, err := exec.LookPath("ovs-ofctl")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gate := filepath.Join(dir, "open")
	script := fmt.Sprintf("#!/bin/sh\nwhile [ ! -e %q ]; do sleep 0.01; done\nexec %q \"$@\"\n", gate, real)
	bin := filepath.Join(dir, "ovs-ofctl")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	open = func() {
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(open) // never leave a process waiting
	return ovs.New(ovs.Options{OfctlPath: bin, Logger: slog.New(runs)}), open
}

// waitQueue waits until an ApplyFlows run for bridge is under way with
// queued batches behind it.
func waitQueue(t *testing.T, c *ovs.Client, bridge string, queued int) {
	t.Helper()
	ctx := ctxT(t)
	for {
		if r, q := ovs.FlowQueue(c, bridge); r && q == queued {
			return
		}
		select {
		case <-ctx.Done():
			r, q := ovs.FlowQueue(c, bridge)
			t.Fatalf("queue of %s: running %v, %d queued; want %d queued", bridge, r, q, queued)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func dropFlow(cookie uint64, port int) string {
	return fmt.Sprintf("cookie=%#x,priority=100,in_port=%d,actions=drop", cookie, port)
}

func cookieFlows(t *testing.T, c *ovs.Client, br string, cookie uint64) int {
	t.Helper()
	fl, err := c.DumpFlows(ctxT(t), br, ovs.CookieMatch(cookie))
	if err != nil {
		t.Fatal(err)
	}
	return len(fl)
}

// Concurrent ApplyFlows on one bridge share ovs-ofctl runs (group commit)
// and every caller's flows go in.
func TestApplyFlowsGroupCommit(t *testing.T) {
	t.Parallel()
	plain := ovstest.Client(t)
	runs := &ofctlRuns{}
	c := ovs.New(ovs.Options{Logger: slog.New(runs)})
	br := ovstest.Bridge(t, plain)
	ctx := ctxT(t)
	const n = 30
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			var b ovs.FlowBatch
			ck := ovs.CookiePrefix | 0x100 | uint64(i)
			b.Replace(ck, dropFlow(ck, 1+i), dropFlow(ck, 100+i))
			errs <- c.ApplyFlows(ctx, br, &b)
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i := 0; i < n; i++ {
		if got := cookieFlows(t, plain, br, ovs.CookiePrefix|0x100|uint64(i)); got != 2 {
			t.Errorf("caller %d: %d flows, want 2", i, got)
		}
	}
	r := runs.runs()
	var sum int64
	for _, b := range r {
		sum += b
	}
	if len(r) >= n || sum != n {
		t.Errorf("%d ovs-ofctl runs with batches %v for %d concurrent calls; want fewer runs, %d batches in all", len(r), r, n, n)
	}
	t.Logf("%d concurrent ApplyFlows: %d ovs-ofctl runs, batches %v", n, len(r), r)
	if running, q := ovs.FlowQueue(c, br); running || q != 0 {
		t.Errorf("bridge not idle after the calls: running %v, %d queued", running, q)
	}
}

// A batch OVS refuses, merged with good ones, fails only its own caller:
// the merged bundle fails and each batch runs again alone.
func TestApplyFlowsGroupBadBatch(t *testing.T) {
	t.Parallel()
	plain := ovstest.Client(t)
	runs := &ofctlRuns{}
	c, open := gatedClient(t, runs)
	br := ovstest.Bridge(t, plain)
	ctx := ctxT(t)
	const n = 6 // queued behind the first; number badAt is refused
	const badAt = 3
	ck := func(i int) uint64 { return ovs.CookiePrefix | 0x200 | uint64(i) }
	errs := make([]chan error, n+1)
	for i := 0; i <= n; i++ {
		var b ovs.FlowBatch
		b.Add(dropFlow(ck(i), 1+i))
		if i == badAt {
			b.Add(fmt.Sprintf("cookie=%#x,priority=1,in_port=7,actions=output:no_such_port", ck(i)))
		}
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- c.ApplyFlows(ctx, br, &b) }()
		waitQueue(t, c, br, i) // in this order
	}
	open()
	for i := 0; i <= n; i++ {
		err := <-errs[i]
		if i == badAt && err == nil {
			t.Errorf("batch %d with a bad flow was applied", i)
		}
		if i != badAt && err != nil {
			t.Errorf("good batch %d failed: %v", i, err)
		}
		want := 1
		if i == badAt {
			want = 0
		}
		if got := cookieFlows(t, plain, br, ck(i)); got != want {
			t.Errorf("batch %d: %d flows, want %d", i, got, want)
		}
	}
	// The first alone, the 6 queued merged (refused), then each alone.
	if r := fmt.Sprint(runs.runs()); r != "[1 6 1 1 1 1 1 1]" {
		t.Errorf("ovs-ofctl runs' batches = %s, want [1 6 1 1 1 1 1 1]", r)
	}
}

// Batches apply in arrival order, merged or not: a delete of a cookie
// queued after an add of it leaves nothing, an add after a delete leaves
// the flow.
func TestApplyFlowsGroupFIFO(t *testing.T) {
	t.Parallel()
	plain := ovstest.Client(t)
	runs := &ofctlRuns{}
	c, open := gatedClient(t, runs)
	br := ovstest.Bridge(t, plain)
	ctx := ctxT(t)
	const k1, k2, first = ovs.CookiePrefix | 0x301, ovs.CookiePrefix | 0x302, ovs.CookiePrefix | 0x303
	if err := plain.AddFlows(ctx, br, []string{dropFlow(k2, 2)}); err != nil {
		t.Fatal(err)
	}
	var steps []ovs.FlowBatch
	add := func(ck uint64, port int) { var b ovs.FlowBatch; b.Add(dropFlow(ck, port)); steps = append(steps, b) }
	del := func(ck uint64) { var b ovs.FlowBatch; b.DeleteCookie(ck); steps = append(steps, b) }
	add(first, 9)
	add(k1, 1)
	del(k1)
	del(k2)
	add(k2, 3)
	errs := make(chan error, len(steps))
	for i := range steps {
		go func() { errs <- c.ApplyFlows(ctx, br, &steps[i]) }()
		waitQueue(t, c, br, i)
	}
	open()
	for range steps {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := cookieFlows(t, plain, br, k1); got != 0 {
		t.Errorf("add then delete: %d flows left", got)
	}
	fl, err := plain.DumpFlows(ctx, br, ovs.CookieMatch(k2))
	if err != nil {
		t.Fatal(err)
	}
	if len(fl) != 1 || !strings.Contains(fl[0].Match, "in_port=3") {
		t.Errorf("delete then add: flows %v, want in_port=3 only", fl)
	}
	if r := fmt.Sprint(runs.runs()); r != "[1 4]" {
		t.Errorf("ovs-ofctl runs' batches = %s, want [1 4]", r)
	}

	// From one goroutine, in sequence, under concurrent load on the bridge.
	const k3 = ovs.CookiePrefix | 0x304
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ck := ovs.CookiePrefix | 0x310 | uint64(w)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var b ovs.FlowBatch
				b.Replace(ck, dropFlow(ck, 10+i%50))
				if err := c.ApplyFlows(ctx, br, &b); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		var a, d ovs.FlowBatch
		a.Add(dropFlow(k3, 1+i))
		d.DeleteCookie(k3)
		if err := c.ApplyFlows(ctx, br, &a); err != nil {
			t.Fatal(err)
		}
		if err := c.ApplyFlows(ctx, br, &d); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if got := cookieFlows(t, plain, br, k3); got != 0 {
		t.Errorf("add then delete in sequence under load: %d flows left", got)
	}
	merged := 0
	for _, b := range runs.runs() {
		if b > 1 {
			merged++
		}
	}
	t.Logf("under load: %d runs, %d merged", len(runs.runs()), merged)
}

// A caller whose ctx ends while its batch is queued leaves the queue with
// ctx's error and its flows never go in; the others' do.
func TestApplyFlowsGroupCancelQueued(t *testing.T) {
	t.Parallel()
	plain := ovstest.Client(t)
	runs := &ofctlRuns{}
	c, open := gatedClient(t, runs)
	br := ovstest.Bridge(t, plain)
	ctx := ctxT(t)
	const a, b, d = ovs.CookiePrefix | 0x401, ovs.CookiePrefix | 0x402, ovs.CookiePrefix | 0x403
	apply := func(ctx context.Context, ck uint64) chan error {
		ch := make(chan error, 1)
		var fb ovs.FlowBatch
		fb.Add(dropFlow(ck, int(ck&0xff))) // a port per cookie: same match would replace
		go func() { ch <- c.ApplyFlows(ctx, br, &fb) }()
		return ch
	}
	errA := apply(ctx, a)
	waitQueue(t, c, br, 0)
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errB := apply(bctx, b)
	waitQueue(t, c, br, 1)
	errD := apply(ctx, d)
	waitQueue(t, c, br, 2)
	cancel()
	if err := <-errB; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled queued batch: err = %v, want context.Canceled", err)
	}
	waitQueue(t, c, br, 1)
	open()
	if err := <-errA; err != nil {
		t.Error(err)
	}
	if err := <-errD; err != nil {
		t.Error(err)
	}
	if got := cookieFlows(t, plain, br, b); got != 0 {
		t.Errorf("cancelled batch's flows went in: %d", got)
	}
	if ga, gd := cookieFlows(t, plain, br, a), cookieFlows(t, plain, br, d); ga != 1 || gd != 1 {
		t.Errorf("other batches' flows: %d, %d; want 1, 1", ga, gd)
	}
	if r := fmt.Sprint(runs.runs()); r != "[1 1]" {
		t.Errorf("ovs-ofctl runs' batches = %s, want [1 1]", r)
	}
}
