package drivertest

import (
	"os"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
)

// runRebuild checks Driver.Rebuild: a new workload from the new spec,
// created and not started, with the new spec's key on its disk; the
// sandbox (network namespace) of a networked server kept; a missing
// instance simply created.
func runRebuild(t *testing.T, newDriver func(t *testing.T) drivers.Driver, image string, o options) {
	t.Run("RebuildReplacesTheWorkload", func(t *testing.T) {
		d := newDriver(t)
		ctx := Ctx(t)
		spec := Spec(image)
		spec.AuthorizedKeys = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRebuildOldKeyRebuildOldKeyRebuildOldKey00 old"
		Boot(t, d, spec)
		spec.Name = "rebuilt"
		spec.AuthorizedKeys = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRebuildNewKeyRebuildNewKeyRebuildNewKey00 new"
		if err := d.Rebuild(ctx, spec, 5*time.Second); err != nil {
			t.Fatalf("rebuild: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerShutdown)
		if err := d.Start(ctx, spec.ID); err != nil {
			t.Fatalf("start after rebuild: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerRunning)
		if o.readFile != nil {
			if got := o.readFile(t, d, spec.ID, "/root/.ssh/authorized_keys"); got != spec.AuthorizedKeys+"\n" {
				t.Errorf("authorized_keys after rebuild = %q, want %q", got, spec.AuthorizedKeys+"\n")
			}
		}
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
			t.Errorf("%d instances with id %s after a rebuild, want 1", n, spec.ID)
		}
	})

	t.Run("RebuildOfMissingWorkloadCreatesIt", func(t *testing.T) {
		d := newDriver(t)
		spec := Spec(image)
		t.Cleanup(func() { _ = d.Destroy(Ctx(t), spec.ID) })
		if err := d.Rebuild(Ctx(t), spec, time.Second); err != nil {
			t.Fatalf("rebuild of a missing instance: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerShutdown)
	})

	t.Run("RebuildKeepsTheSandbox", func(t *testing.T) {
		d := newDriver(t)
		if !d.Capabilities().Networking {
			t.Skip("driver does not declare Networking")
		}
		ctx := Ctx(t)
		spec := Spec(image)
		spec.Networked = true
		Create(t, d, spec)
		before, err := d.Sandbox(ctx, spec.ID)
		if err != nil {
			t.Fatalf("sandbox: %v", err)
		}
		if err := d.Start(ctx, spec.ID); err != nil {
			t.Fatalf("start: %v", err)
		}
		if err := d.Rebuild(ctx, spec, 5*time.Second); err != nil {
			t.Fatalf("rebuild: %v", err)
		}
		if err := d.Start(ctx, spec.ID); err != nil {
			t.Fatalf("start after rebuild: %v", err)
		}
		WantPower(t, d, spec.ID, drivers.PowerRunning)
		// The namespace the agent plumbed is the one the new workload
		// joined: no re-plumbing, the server keeps its link up.
		if after, err := d.Sandbox(ctx, spec.ID); err != nil || !sameNetns(before, after) {
			t.Errorf("sandbox after rebuild = %q, %v; want the namespace of %q (kept)", after, err, before)
		}
	})
}

// sameNetns reports whether two namespace paths name one namespace: the
// same file when both can be read (a /proc/<pid>/ns/net path follows the
// process holding it, not the namespace), else the same path.
func sameNetns(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(fa, fb)
	}
	return a == b
}
