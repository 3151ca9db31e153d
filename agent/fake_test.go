package agent

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/fake"
)

// fakeDriver wraps the shared fake driver with what the agent's tests
// look at: every call by operation and instance, failures for one
// instance, and a hook that can block an operation.
type fakeDriver struct {
	*fake.Driver

	mu    sync.Mutex
	calls []string                   // "op id", in order
	fail  map[string]error           // "op id" -> error to return
	hook  func(op string, id string) // runs before the operation, may block
}

func newFakeDriver() *fakeDriver {
	d := &fakeDriver{Driver: fake.New(), fail: map[string]error{}}
	d.SetFail(d.before)
	return d
}

// before is the fake's Fail hook; the fake calls it without its lock.
func (d *fakeDriver) before(op fake.Op, id string) error {
	return d.note(string(op), id)
}

func (d *fakeDriver) note(op, id string) error {
	d.mu.Lock()
	d.calls = append(d.calls, op+" "+id)
	hook := d.hook
	err := d.fail[op+" "+id]
	d.mu.Unlock()
	if hook != nil {
		hook(op, id)
	}
	return err
}

// Reboot records hard reboots apart, which the fake's Op does not.
func (d *fakeDriver) Reboot(ctx context.Context, id string, hard bool) error {
	if hard {
		d.mu.Lock()
		d.calls = append(d.calls, "reboot_hard "+id)
		d.mu.Unlock()
	}
	return d.Driver.Reboot(ctx, id, hard)
}

func (d *fakeDriver) setFail(op, id string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail[op+" "+id] = err
}

func (d *fakeDriver) setHook(h func(op, id string)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hook = h
}

func (d *fakeDriver) callsOf(op string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ids []string
	for _, c := range d.calls {
		if o, id, _ := strings.Cut(c, " "); o == op {
			ids = append(ids, id)
		}
	}
	return ids
}

// put makes an instance in power state p directly through the fake, as if
// created earlier or behind the agent's back; it is not recorded.
func (d *fakeDriver) put(t *testing.T, id string, p drivers.PowerState) {
	t.Helper()
	ctx := context.Background()
	f := d.Driver
	err := f.Create(ctx, drivers.Spec{ID: id, Image: fakeImage, PidsLimit: 10, Networked: true})
	if err == nil && p != drivers.PowerShutdown {
		err = f.Start(ctx, id)
	}
	switch {
	case err != nil:
	case p == drivers.PowerPaused:
		err = f.Pause(ctx, id)
	case p == drivers.PowerCrashed:
		err = f.Crash(id, 137)
	}
	if err != nil {
		t.Fatalf("put %s: %v", id, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = nil
}

func (d *fakeDriver) get(id string) (fake.Instance, bool) { return d.Driver.Get(id) }
