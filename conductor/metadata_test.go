package conductor

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// A host's agent gets the metadata of its own servers only: never of a
// server on another host (whatever host it names), nor of a deleted one.
func TestInstanceMetadataOnlyForTheOwningHost(t *testing.T) {
	st := openSQLite(t)
	c := New(st, bus.NewMem(), config.Conductor{AgentUserPrefix: "capsule-agent-"}, 3, quietLog())
	c.now = func() time.Time { return testNow }
	addHost(t, st, "host-a")
	addHost(t, st, "host-b")
	ud := base64.StdEncoding.EncodeToString([]byte("#cloud-config\n"))
	key := "k1"
	inst := addInstance(t, st, onHost("host-a"), state(lifecycle.Active, lifecycle.NoTask), func(i *store.Instance) {
		i.Name, i.Hostname, i.UserData, i.KeyName, i.KeyData, i.Metadata = "web1", "web1", ud, &key, "ssh-ed25519 AAAA k", `{"a":"b"}`
	})
	gone := addInstance(t, st, onHost("host-a"), deletedAt(testNow))

	out, err := sendAs(t, c, "capsule-agent-host-a", protocol.KindInstanceMetadata,
		protocol.InstanceMetadataRequest{Host: "host-a", InstanceID: inst.ID})
	if err != nil {
		t.Fatalf("host-a's own server: %v", err)
	}
	md, ok := out.(protocol.InstanceMetadata)
	if !ok {
		t.Fatalf("reply %T", out)
	}
	if md.UUID != inst.ID || md.Name != "web1" || md.UserData != ud || md.KeyName != "k1" || md.Meta["a"] != "b" ||
		md.AvailabilityZone != "nova" || md.ProjectID != "p1" {
		t.Errorf("metadata = %+v", md)
	}
	for name, r := range map[string]struct {
		sender string
		req    protocol.InstanceMetadataRequest
	}{
		"host-b asks as itself":   {"capsule-agent-host-b", protocol.InstanceMetadataRequest{Host: "host-b", InstanceID: inst.ID}},
		"host-b names host-a":     {"capsule-agent-host-b", protocol.InstanceMetadataRequest{Host: "host-a", InstanceID: inst.ID}},
		"a deleted server":        {"capsule-agent-host-a", protocol.InstanceMetadataRequest{Host: "host-a", InstanceID: gone.ID}},
		"an unknown server":       {"capsule-agent-host-a", protocol.InstanceMetadataRequest{Host: "host-a", InstanceID: "nope"}},
		"no host (control plane)": {"capsule", protocol.InstanceMetadataRequest{InstanceID: inst.ID}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := sendAs(t, c, r.sender, protocol.KindInstanceMetadata, r.req); err == nil {
				t.Fatal("answered")
			} else if k := errdefs.KindOf(err); k != errdefs.ErrNotFound && k != errdefs.ErrForbidden {
				t.Errorf("error kind %v (%v), want NotFound or Forbidden", k, err)
			}
		})
	}
}

// A server's posted password is stored once, through its own host only;
// the metadata then carries it.
func TestSetMetadataPasswordOnceFromTheOwningHost(t *testing.T) {
	st := openSQLite(t)
	c := New(st, bus.NewMem(), config.Conductor{AgentUserPrefix: "capsule-agent-"}, 3, quietLog())
	c.now = func() time.Time { return testNow }
	addHost(t, st, "host-a")
	addHost(t, st, "host-b")
	inst := addInstance(t, st, onHost("host-a"), state(lifecycle.Active, lifecycle.NoTask))
	post := func(sender, host, pw string) error {
		_, err := sendAs(t, c, sender, protocol.KindSetMetadataPassword,
			protocol.SetMetadataPassword{Host: host, InstanceID: inst.ID, Password: pw})
		return err
	}
	for name, err := range map[string]error{
		"host-b as itself":  post("capsule-agent-host-b", "host-b", "evil"),
		"host-b as host-a":  post("capsule-agent-host-b", "host-a", "evil"),
		"too long":          post("capsule-agent-host-a", "host-a", strings.Repeat("x", 257)),
		"no host (control)": post("capsule", "", "evil"),
	} {
		if err == nil {
			t.Errorf("%s: stored", name)
		}
	}
	if err := post("capsule-agent-host-a", "host-a", "enc"); err != nil {
		t.Fatalf("host-a's own server: %v", err)
	}
	if err := post("capsule-agent-host-a", "host-a", "again"); errdefs.KindOf(err) != errdefs.ErrConflict {
		t.Errorf("second post: %v, want Conflict", err)
	}
	out, err := sendAs(t, c, "capsule-agent-host-a", protocol.KindInstanceMetadata,
		protocol.InstanceMetadataRequest{Host: "host-a", InstanceID: inst.ID})
	if err != nil {
		t.Fatal(err)
	}
	if md := out.(protocol.InstanceMetadata); md.Password != "enc" {
		t.Errorf("metadata password %q, want enc", md.Password)
	}
}
