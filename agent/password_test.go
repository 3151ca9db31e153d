package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
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
