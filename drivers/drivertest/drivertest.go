// Package drivertest is the conformance suite every compute driver must
// pass: the idempotency and error-kind guarantees the agent relies on to
// replay messages after a crash.
package drivertest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/limits"
)

// Timeouts generous enough for a real dockerd pulling an image.
const (
	opTimeout   = 2 * time.Minute
	pollTimeout = 30 * time.Second
	stopGrace   = 10 * time.Second
)

// Spec returns a small valid spec with a fresh instance id, as the agent
// would build it.
func Spec(image string) drivers.Spec {
	id := uuid.NewString()
	return drivers.Spec{
		ID:        id,
		Name:      "conformance-" + id[:8],
		Hostname:  "conf-" + id[:8],
		Image:     image,
		VCPUs:     1,
		MemoryMB:  64,
		DiskGB:    1,
		PidsLimit: 64,
		Labels:    map[string]string{"capsule.test": "drivertest"},
	}
}

// Ctx returns a context bounded by opTimeout and cancelled at test end.
func Ctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// Create creates spec and registers its destruction at the end of the test.
func Create(t *testing.T, d drivers.Driver, spec drivers.Spec) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := d.Destroy(ctx, spec.ID); err != nil {
			t.Errorf("cleanup: destroy %s: %v", spec.ID, err)
		}
	})
	if err := d.Create(Ctx(t), spec); err != nil {
		t.Fatalf("create %s: %v", spec.ID, err)
	}
}

// Boot creates and starts spec and waits until it reports running.
func Boot(t *testing.T, d drivers.Driver, spec drivers.Spec) {
	t.Helper()
	Create(t, d, spec)
	if err := d.Start(Ctx(t), spec.ID); err != nil {
		t.Fatalf("start %s: %v", spec.ID, err)
	}
	WantPower(t, d, spec.ID, drivers.PowerRunning)
}

// WantPower polls Status until the instance reports want (drivers may take
// a moment to settle) and fails the test if it never does.
func WantPower(t *testing.T, d drivers.Driver, id string, want drivers.PowerState) drivers.Status {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for {
		st, err := d.Status(Ctx(t), id)
		if err != nil {
			t.Fatalf("status %s: %v", id, err)
		}
		if st.Power == want {
			if st.ID != id {
				t.Fatalf("status of %s reports id %q", id, st.ID)
			}
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %s: power %d (%s), want %d", id, st.Power, st.Description, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WantNotFound fails the test unless err wraps drivers.ErrNotFound.
func WantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, drivers.ErrNotFound) {
		t.Errorf("%s on a missing instance: got %v, want an error wrapping drivers.ErrNotFound", what, err)
	}
}

// ConsoleLines polls ConsoleOutput until it has at least min lines.
func ConsoleLines(t *testing.T, d drivers.Driver, id string, min int) []string {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for {
		out, err := d.ConsoleOutput(Ctx(t), id, -1)
		if err != nil {
			t.Fatalf("console output %s: %v", id, err)
		}
		lines := splitLines(out)
		if len(lines) >= min {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("console output %s: %d lines, want >= %d:\n%s", id, len(lines), min, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// FileReader returns the content of the file at path on instance id's
// disk, failing t if it cannot; the suite has no driver method for it, so
// each driver's test supplies one.
type FileReader func(t *testing.T, d drivers.Driver, id, path string) string

// Option changes what Run checks.
type Option func(*options)

type options struct{ readFile FileReader }

// WithFileReader lets Run check file contents the driver wrote (the
// authorized_keys of Spec.AuthorizedKeys); without it only the boot is
// checked.
func WithFileReader(r FileReader) Option { return func(o *options) { o.readFile = r } }

// Run runs the conformance suite. newDriver is called once per subtest;
// image is a base image whose PID 1 prints a few boot lines, keeps running
// and exits on SIGTERM.
func Run(t *testing.T, newDriver func(t *testing.T) drivers.Driver, image string, opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	t.Run("AuthorizedKeysWrittenBeforeBoot", func(t *testing.T) {
		d := newDriver(t)
		spec := Spec(image)
		spec.AuthorizedKeys = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDrivertestKeyDrivertestKeyDrivertestKey0 conformance"
		Create(t, d, spec)
		// A replayed create keeps the instance, key included.
		if err := d.Create(Ctx(t), spec); err != nil {
			t.Fatalf("second create: %v", err)
		}
		if err := d.Start(Ctx(t), spec.ID); err != nil {
			t.Fatalf("start: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerRunning)
		if o.readFile == nil {
			return
		}
		if got := o.readFile(t, d, spec.ID, "/root/.ssh/authorized_keys"); got != spec.AuthorizedKeys+"\n" {
			t.Errorf("authorized_keys = %q, want %q", got, spec.AuthorizedKeys+"\n")
		}
	})

	runRebuild(t, newDriver, image, o)

	t.Run("Identity", func(t *testing.T) {
		d := newDriver(t)
		if d.Name() == "" {
			t.Error("Name is empty")
		}
		info, err := d.Fingerprint(Ctx(t))
		if err != nil {
			t.Fatalf("fingerprint: %v", err)
		}
		if info.VCPUs <= 0 || info.MemoryMB <= 0 || info.DiskGB <= 0 {
			t.Errorf("fingerprint reports no capacity: %+v", info)
		}
		if info.HypervisorType == "" || info.HypervisorVersion <= 0 || info.Arch == "" {
			t.Errorf("fingerprint lacks hypervisor type/version/arch: %+v", info)
		}
	})

	t.Run("CreateIsIdempotentAndLeavesItStopped", func(t *testing.T) {
		d := newDriver(t)
		spec := Spec(image)
		Create(t, d, spec)
		if err := d.Create(Ctx(t), spec); err != nil {
			t.Fatalf("second create of %s: %v", spec.ID, err)
		}
		WantPower(t, d, spec.ID, drivers.PowerShutdown)
	})

	t.Run("StartIsIdempotent", func(t *testing.T) {
		d := newDriver(t)
		spec := Spec(image)
		Boot(t, d, spec)
		if err := d.Start(Ctx(t), spec.ID); err != nil {
			t.Fatalf("second start: %v", err)
		}
		st := WantPower(t, d, spec.ID, drivers.PowerRunning)
		if st.StartedAt.IsZero() {
			t.Error("running instance has no StartedAt")
		}
		if st.BackendID == "" {
			t.Error("status has no BackendID")
		}
	})

	t.Run("StopIsIdempotentAndRestartable", func(t *testing.T) {
		d := newDriver(t)
		spec := Spec(image)
		Boot(t, d, spec)
		// A clean stop needs a guest that handles it: wait until its init
		// has written to the console (the test image's sets its SIGTERM
		// trap first), as a VM's ACPI shutdown needs a booted OS. A stop
		// that came first, on a loaded machine, was a kill (137).
		if d.Capabilities().ConsoleOutput {
			deadline := time.Now().Add(pollTimeout)
			for {
				out, err := d.ConsoleOutput(Ctx(t), spec.ID, -1)
				if err == nil && strings.TrimSpace(out) != "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no console output %s after the start: %q %v", pollTimeout, out, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		if err := d.Stop(Ctx(t), spec.ID, stopGrace); err != nil {
			t.Fatalf("stop: %v", err)
		}
		st := WantPower(t, d, spec.ID, drivers.PowerShutdown)
		if st.ExitCode != 0 {
			t.Errorf("clean stop: exit code %d, want 0", st.ExitCode)
		}
		if err := d.Stop(Ctx(t), spec.ID, stopGrace); err != nil {
			t.Fatalf("second stop: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerShutdown)
		if err := d.Start(Ctx(t), spec.ID); err != nil {
			t.Fatalf("start after stop: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerRunning)
	})

	for _, hard := range []bool{false, true} {
		name := "RebootSoft"
		if hard {
			name = "RebootHard"
		}
		t.Run(name, func(t *testing.T) {
			d := newDriver(t)
			spec := Spec(image)
			Boot(t, d, spec)
			before := WantPower(t, d, spec.ID, drivers.PowerRunning)
			if err := d.Reboot(Ctx(t), spec.ID, hard); err != nil {
				t.Fatalf("reboot(hard=%v): %v", hard, err)
			}
			after := WantPower(t, d, spec.ID, drivers.PowerRunning)
			if !after.StartedAt.After(before.StartedAt) {
				t.Errorf("reboot did not restart: StartedAt %v then %v", before.StartedAt, after.StartedAt)
			}
		})
	}

	t.Run("PauseUnpause", func(t *testing.T) {
		d := newDriver(t)
		if !d.Capabilities().Pause {
			t.Skip("driver does not declare Pause")
		}
		spec := Spec(image)
		Boot(t, d, spec)
		if err := d.Pause(Ctx(t), spec.ID); err != nil {
			t.Fatalf("pause: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerPaused)
		if err := d.Pause(Ctx(t), spec.ID); err != nil {
			t.Fatalf("second pause: %v", err)
		}
		if err := d.Unpause(Ctx(t), spec.ID); err != nil {
			t.Fatalf("unpause: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerRunning)
		if err := d.Unpause(Ctx(t), spec.ID); err != nil {
			t.Fatalf("second unpause: %v", err)
		}
		// A paused instance can still be stopped (the agent's stop of a
		// paused server).
		if err := d.Pause(Ctx(t), spec.ID); err != nil {
			t.Fatalf("pause again: %v", err)
		}
		if err := d.Stop(Ctx(t), spec.ID, stopGrace); err != nil {
			t.Fatalf("stop of a paused instance: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerShutdown)
	})

	t.Run("DestroyIsIdempotent", func(t *testing.T) {
		d := newDriver(t)
		spec := Spec(image)
		Boot(t, d, spec)
		if err := d.Destroy(Ctx(t), spec.ID); err != nil {
			t.Fatalf("destroy of a running instance: %v", err)
		}
		_, err := d.Status(Ctx(t), spec.ID)
		WantNotFound(t, "Status after Destroy", err)
		if err := d.Destroy(Ctx(t), spec.ID); err != nil {
			t.Fatalf("second destroy: %v", err)
		}
		if err := d.Destroy(Ctx(t), uuid.NewString()); err != nil {
			t.Fatalf("destroy of a never-created instance: %v", err)
		}
		list, err := d.List(Ctx(t))
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, st := range list {
			if st.ID == spec.ID {
				t.Errorf("destroyed instance %s still listed", spec.ID)
			}
		}
	})

	t.Run("ListContainsCreated", func(t *testing.T) {
		d := newDriver(t)
		a, b := Spec(image), Spec(image)
		Boot(t, d, a)
		Create(t, d, b)
		list, err := d.List(Ctx(t))
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		got := map[string]drivers.PowerState{}
		for _, st := range list {
			got[st.ID] = st.Power
		}
		if p, ok := got[a.ID]; !ok || p != drivers.PowerRunning {
			t.Errorf("list: %s present=%v power=%d, want running", a.ID, ok, p)
		}
		if p, ok := got[b.ID]; !ok || p != drivers.PowerShutdown {
			t.Errorf("list: %s present=%v power=%d, want shutdown", b.ID, ok, p)
		}
	})

	t.Run("ConsoleOutputTails", func(t *testing.T) {
		d := newDriver(t)
		if !d.Capabilities().ConsoleOutput {
			t.Skip("driver does not declare ConsoleOutput")
		}
		spec := Spec(image)
		Boot(t, d, spec)
		all := ConsoleLines(t, d, spec.ID, 4)
		out, err := d.ConsoleOutput(Ctx(t), spec.ID, 2)
		if err != nil {
			t.Fatalf("console output (2 lines): %v", err)
		}
		tail := splitLines(out)
		// The base image sleeps after booting, so the log is stable now.
		if want := all[len(all)-2:]; !slices.Equal(tail, want) {
			t.Errorf("console tail 2 = %q, want %q", tail, want)
		}
		if out, err := d.ConsoleOutput(Ctx(t), spec.ID, 0); err != nil || out != "" {
			t.Errorf("console tail 0 = %q, %v; want empty", out, err)
		}
		for _, l := range all {
			if strings.ContainsFunc(l, func(r rune) bool { return r < 0x20 && r != '\t' }) {
				t.Errorf("console line has control characters: %q", l)
			}
		}
	})

	t.Run("MissingInstanceIsNotFound", func(t *testing.T) {
		d := newDriver(t)
		id := uuid.NewString()
		ctx := Ctx(t)
		_, err := d.Status(ctx, id)
		WantNotFound(t, "Status", err)
		WantNotFound(t, "Start", d.Start(ctx, id))
		WantNotFound(t, "Stop", d.Stop(ctx, id, time.Second))
		WantNotFound(t, "Reboot soft", d.Reboot(ctx, id, false))
		WantNotFound(t, "Reboot hard", d.Reboot(ctx, id, true))
		if d.Capabilities().Pause {
			WantNotFound(t, "Pause", d.Pause(ctx, id))
			WantNotFound(t, "Unpause", d.Unpause(ctx, id))
		}
		if d.Capabilities().ConsoleOutput {
			_, err = d.ConsoleOutput(ctx, id, 10)
			WantNotFound(t, "ConsoleOutput", err)
		}
	})

	t.Run("Sandbox", func(t *testing.T) {
		d := newDriver(t)
		ctx := Ctx(t)
		if !d.Capabilities().Networking {
			if _, err := d.Sandbox(ctx, uuid.NewString()); !errors.Is(err, drivers.ErrNotSupported) {
				t.Errorf("Sandbox without Networking: %v, want ErrNotSupported", err)
			}
			t.Skip("driver does not declare Networking")
		}
		_, err := d.Sandbox(ctx, uuid.NewString())
		WantNotFound(t, "Sandbox", err)

		// A server without NICs has no sandbox to plumb.
		plain := Spec(image)
		Create(t, d, plain)
		if _, err := d.Sandbox(ctx, plain.ID); !errors.Is(err, drivers.ErrNotSupported) {
			t.Errorf("Sandbox of an instance created without network: %v, want ErrNotSupported", err)
		}

		spec := Spec(image)
		spec.DNS = []string{"192.0.2.53"}
		spec.Networked = true
		Create(t, d, spec)
		// The namespace exists before the workload ever ran: that is
		// what lets the agent plumb first.
		p1, err := d.Sandbox(ctx, spec.ID)
		if err != nil || p1 == "" {
			t.Fatalf("sandbox of a created instance: %q, %v", p1, err)
		}
		WantPower(t, d, spec.ID, drivers.PowerShutdown)
		if p2, err := d.Sandbox(ctx, spec.ID); err != nil || p2 != p1 {
			t.Errorf("second sandbox call: %q, %v; want %q", p2, err, p1)
		}
		if err := d.Start(ctx, spec.ID); err != nil {
			t.Fatalf("start after sandbox: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerRunning)
		if p, err := d.Sandbox(ctx, spec.ID); err != nil || p == "" {
			t.Errorf("sandbox of a running instance: %q, %v", p, err)
		}
		// A workload restart keeps running in a namespace the driver
		// can name.
		if err := d.Reboot(ctx, spec.ID, true); err != nil {
			t.Fatalf("reboot: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerRunning)
		if err := d.Stop(ctx, spec.ID, stopGrace); err != nil {
			t.Fatalf("stop: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerShutdown)
		if p, err := d.Sandbox(ctx, spec.ID); err != nil || p == "" {
			t.Errorf("sandbox after stop: %q, %v", p, err)
		}
		if err := d.Start(ctx, spec.ID); err != nil {
			t.Fatalf("start after stop: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerRunning)

		// The sandbox is part of the instance, never an instance.
		list, err := d.List(ctx)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		n := 0
		for _, st := range list {
			if st.ID == spec.ID {
				n++
			}
		}
		if n != 1 {
			t.Errorf("instance listed %d times, want once: %+v", n, list)
		}
		if err := d.Destroy(ctx, spec.ID); err != nil {
			t.Fatalf("destroy: %v", err)
		}
		_, err = d.Sandbox(ctx, spec.ID)
		WantNotFound(t, "Sandbox after Destroy", err)
	})

	t.Run("ResizeLiveKeepsItRunning", func(t *testing.T) {
		d := newDriver(t)
		if !d.Capabilities().LiveResize {
			err := d.Resize(Ctx(t), uuid.NewString(), 1, 64, limits.Limits{})
			if !errors.Is(err, drivers.ErrNotSupported) && !errors.Is(err, drivers.ErrNotFound) {
				t.Errorf("Resize without LiveResize: %v, want ErrNotSupported", err)
			}
			return
		}
		spec := Spec(image)
		Boot(t, d, spec)
		before := WantPower(t, d, spec.ID, drivers.PowerRunning)
		if err := d.Resize(Ctx(t), spec.ID, 2, 128, limits.Limits{PidsMax: 100}); err != nil {
			t.Fatalf("resize: %v", err)
		}
		after := WantPower(t, d, spec.ID, drivers.PowerRunning)
		if !after.StartedAt.Equal(before.StartedAt) || after.BackendID != before.BackendID {
			t.Errorf("resize restarted the instance: started %v -> %v, backend %s -> %s",
				before.StartedAt, after.StartedAt, before.BackendID, after.BackendID)
		}
		// Back down, as a revert does.
		if err := d.Resize(Ctx(t), spec.ID, 1, 64, limits.Limits{}); err != nil {
			t.Fatalf("resize back: %v", err)
		}
		// A size no driver accepts fails, and the instance keeps running.
		if err := d.Resize(Ctx(t), spec.ID, 0, 64, limits.Limits{}); err == nil {
			t.Error("resize to 0 vCPUs succeeded")
		}
		WantPower(t, d, spec.ID, drivers.PowerRunning)
		WantNotFound(t, "Resize", d.Resize(Ctx(t), uuid.NewString(), 1, 64, limits.Limits{}))
	})

	t.Run("CreateRefusesNoPidsLimit", func(t *testing.T) {
		d := newDriver(t)
		spec := Spec(image)
		spec.PidsLimit = 0
		t.Cleanup(func() { _ = d.Destroy(context.Background(), spec.ID) })
		if err := d.Create(Ctx(t), spec); err == nil {
			t.Fatal("create with PidsLimit 0 succeeded; drivers must refuse it")
		}
		_, err := d.Status(Ctx(t), spec.ID)
		WantNotFound(t, "Status after refused create", err)
	})

	t.Run("MigratorBasics", func(t *testing.T) {
		d := newDriver(t)
		m, ok := d.(drivers.Migrator)
		if !ok {
			t.Skip("driver does not implement drivers.Migrator")
		}
		spec := Spec(image)
		Boot(t, d, spec)
		// A server built from an image has no data outside its
		// container: nothing the driver mounts itself counts.
		if vols, err := m.Volumes(Ctx(t), spec.ID); err != nil || len(vols) != 0 {
			t.Errorf("volumes of a plain server: %v, %v", vols, err)
		}
		_, err := m.Volumes(Ctx(t), uuid.NewString())
		WantNotFound(t, "Volumes", err)
		// Removing an image that is not here succeeds (cleanups retry).
		if err := m.RemoveImage(Ctx(t), "capsule-drivertest/missing:"+uuid.NewString()[:8]); err != nil {
			t.Errorf("remove a missing image: %v", err)
		}
	})
}
