package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers/fake"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/protocol"
)

// set_admin_password reaches the driver with the hash; a server without
// /etc/shadow is NotSupported through the bus.
func TestSetAdminPassword(t *testing.T) {
	e, drv := startFake(t)
	e.build("i-pw", "req-pw", fakeImage)
	if r := e.waitReport("i-pw", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	call := func() error {
		m, err := bus.NewMessage(protocol.KindSetAdminPassword, protocol.SetAdminPassword{InstanceID: "i-pw", Hash: "$6$salt$hash"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var reply struct{}
		return e.bus.Call(ctx, bus.ComputeQueue(testHost), m, &reply)
	}
	if err := call(); errdefs.KindOf(err) != errdefs.ErrNotSupported {
		t.Errorf("without /etc/shadow: %v, want NotSupported", err)
	}
	if err := drv.WriteFile("i-pw", "/etc/shadow", "root:*:1:0:99999:7:::\n"); err != nil {
		t.Fatal(err)
	}
	if err := call(); err != nil {
		t.Fatalf("set password: %v", err)
	}
	if inst, _ := drv.get("i-pw"); !strings.HasPrefix(inst.Files["/etc/shadow"], "root:$6$salt$hash:") {
		t.Errorf("/etc/shadow = %q", inst.Files["/etc/shadow"])
	}
}

// A build's and a rebuild's adminPass: a driver that sets it at create
// (Capabilities.PasswordAtCreate) gets the hash in its Create's and
// Rebuild's spec and no SetAdminPassword; another gets none in the spec
// and SetAdminPassword after the create (the image without /etc/shadow
// is built all the same).
func TestBuildPasswordAtCreateOrAfter(t *testing.T) {
	for _, atCreate := range []bool{false, true} {
		e, drv := startFake(t)
		drv.Caps.PasswordAtCreate = atCreate
		spec := protocol.InstanceSpec{ID: "i-bpw", Name: "srv-i-bpw", ProjectID: "proj-1", ImageRef: fakeImage,
			VCPUs: 1, MemoryMB: 64, DiskGB: 1, AdminPassHash: "$6$salt$build"}
		e.publish(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: "req-b", Attempt: 1, Spec: spec})
		if r := e.waitReport("i-bpw", 1, 5*time.Second); !r.OK {
			t.Fatalf("at create %v: build: %+v", atCreate, r)
		}
		wantHash, wantCalls := "", 1
		if atCreate {
			wantHash, wantCalls = spec.AdminPassHash, 0
		}
		inst, _ := drv.get("i-bpw")
		if inst.Spec.AdminPassHash != wantHash || drv.Calls(fake.OpSetAdminPassword) != wantCalls {
			t.Errorf("at create %v: build's spec hash %q, %d SetAdminPassword; want %q, %d",
				atCreate, inst.Spec.AdminPassHash, drv.Calls(fake.OpSetAdminPassword), wantHash, wantCalls)
		}
		spec.AdminPassHash = "$6$salt$rebuild"
		e.publish(protocol.KindRebuildInstance, protocol.RebuildInstance{RequestID: "req-r", Spec: spec, Start: true})
		if r := e.waitReport("i-bpw", 2, 5*time.Second); !r.OK {
			t.Fatalf("at create %v: rebuild: %+v", atCreate, r)
		}
		wantHash, wantCalls = "", 2
		if atCreate {
			wantHash, wantCalls = spec.AdminPassHash, 0
		}
		inst, _ = drv.get("i-bpw")
		if inst.Spec.AdminPassHash != wantHash || drv.Calls(fake.OpSetAdminPassword) != wantCalls {
			t.Errorf("at create %v: rebuild's spec hash %q, %d SetAdminPassword; want %q, %d",
				atCreate, inst.Spec.AdminPassHash, drv.Calls(fake.OpSetAdminPassword), wantHash, wantCalls)
		}
	}
}
