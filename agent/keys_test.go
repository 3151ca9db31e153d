package agent

import (
	"context"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers/fake"
	"github.com/capsule-cloud/capsule/protocol"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAgentTestKeyAgentTestKeyAgentTestKey00 user@host"

// TestBuildPassesAuthorizedKeys: the keypair's key in the build request
// reaches the driver, which writes it before the first start.
func TestBuildPassesAuthorizedKeys(t *testing.T) {
	e, drv := startFake(t)
	e.publish(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: "req-k", Attempt: 1,
		Spec: protocol.InstanceSpec{ID: "i-k", Name: "srv-i-k", ProjectID: "proj-1", ImageRef: fakeImage,
			VCPUs: 1, MemoryMB: 64, DiskGB: 1, AuthorizedKeys: testKey}})
	if r := e.waitReport("i-k", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	inst, ok := drv.get("i-k")
	if !ok || inst.Spec.AuthorizedKeys != testKey || inst.Files[fake.AuthorizedKeysPath] != testKey+"\n" {
		t.Errorf("driver spec keys %q, file %q; want the key", inst.Spec.AuthorizedKeys, inst.Files[fake.AuthorizedKeysPath])
	}

	e.build("i-nokey", "req-n", fakeImage)
	if r := e.waitReport("i-nokey", 1, 5*time.Second); !r.OK {
		t.Fatalf("build without key: %+v", r)
	}
	if inst, _ := drv.get("i-nokey"); inst.Spec.AuthorizedKeys != "" || inst.Files[fake.AuthorizedKeysPath] != "" {
		t.Errorf("a server without a key got %q / %q", inst.Spec.AuthorizedKeys, inst.Files[fake.AuthorizedKeysPath])
	}
}

// TestMigrationKeepsTheServersAuthorizedKeys: the file moves with the
// disk as the server left it; the import does not write the boot key
// over the user's changes.
func TestMigrationKeepsTheServersAuthorizedKeys(t *testing.T) {
	e := newMigEnv(t)
	const id = "i-keys"
	s := netSpec(id)
	s.AuthorizedKeys = testKey
	m, err := bus.NewMessage(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: "req-build", Attempt: 1, Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.bus.Publish(context.Background(), bus.ComputeQueue(srcHost), m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the build report", func() bool { _, ok := e.cond.buildReport(id); return ok })
	if r, _ := e.cond.buildReport(id); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	const edited = "ssh-ed25519 AAAA the-users-own-key\n"
	if err := e.src.drv.WriteFile(id, fake.AuthorizedKeysPath, edited); err != nil {
		t.Fatal(err)
	}
	if err := e.src.drv.WriteFile(id, "/root/data", "tenant-data"); err != nil { // exportAndImport checks it moved
		t.Fatal(err)
	}
	e.src.drv.resetCalls()
	spec := resizedSpec(id)
	spec.AuthorizedKeys = testKey // what SpecFor sends: the key copied at boot
	e.exportAndImport(t, id, spec)
	inst, _ := e.dst.drv.get(id)
	if got := inst.Files[fake.AuthorizedKeysPath]; got != edited {
		t.Errorf("authorized_keys on the target = %q, want the server's own %q", got, edited)
	}
}
