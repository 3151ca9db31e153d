package compute

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// A taken fixed IP on a shared network: the caller hears the address is
// in use; only an admin, or the holder's own project, hears whose server
// holds it (Nova names the instance, which would hand one tenant another
// tenant's server ids).
func TestFixedIPInUseNamesNoOtherProjectsServer(t *testing.T) {
	f := newFixture(t)
	n := f.addNetwork("shared", "p-admin", "10.9.0.0/24", true)
	boot := func(token, name string) (int, string) {
		resp, body := f.do("POST", "/v2.1/servers", token,
			`{"server":{"name":"`+name+`","imageRef":"`+imageID+`","flavorRef":"1","networks":[{"uuid":"`+n.ID+`","fixed_ip":"10.9.0.20"}]}}`)
		msg := ""
		if br, ok := body["badRequest"].(map[string]any); ok {
			msg, _ = br["message"].(string)
		}
		return resp.StatusCode, msg
	}
	code, _ := boot("demo", "holder")
	if code != 202 {
		t.Fatalf("boot the holder: %d", code)
	}
	var holder store.Instance
	if err := f.st.DB.Where("name = ?", "holder").First(&holder).Error; err != nil {
		t.Fatal(err)
	}
	if code, msg := boot("other", "probe"); code != 400 || msg != "Fixed IP address 10.9.0.20 is already in use." {
		t.Errorf("another project: %d %q, want 400 without the holder", code, msg)
	}
	if code, msg := boot("demo", "again"); code != 400 || !strings.Contains(msg, holder.ID) {
		t.Errorf("the holder's project: %d %q, want the holder named", code, msg)
	}
	if code, msg := boot("admin", "admin"); code != 400 || !strings.Contains(msg, holder.ID) {
		t.Errorf("admin: %d %q, want the holder named", code, msg)
	}
}

// Nova's locked_by: an admin's lock on a project's server cannot be lifted
// (nor taken over by re-locking) by the project's members: 403; the
// owner's own lock they lift as before, and an admin lifts any lock.
func TestMemberCannotUnlockAnAdminsLock(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	f.activate(id, "h1")
	action := func(token, body string) int {
		resp, _ := f.do("POST", "/v2.1/servers/"+id+"/action", token, body)
		return resp.StatusCode
	}
	lockedBy := func() (bool, string) {
		var inst store.Instance
		if err := f.st.DB.Where("id = ?", id).First(&inst).Error; err != nil {
			t.Fatal(err)
		}
		return inst.Locked, inst.LockedBy
	}

	if c := action("admin", `{"lock":null}`); c != 202 {
		t.Fatalf("admin lock: %d", c)
	}
	if l, by := lockedBy(); !l || by != "admin" {
		t.Fatalf("after the admin's lock: locked %v by %q", l, by)
	}
	resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"unlock":null}`)
	expectFault(t, resp, body, 403, "forbidden")
	// Tenant isolation: another project does not see the server, a
	// reader may not write, no token is a 401.
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "other", `{"unlock":null}`)
	expectFault(t, resp, body, 404, "itemNotFound")
	if c := action("read", `{"unlock":null}`); c != 403 {
		t.Errorf("reader unlock: %d, want 403", c)
	}
	if c := action("", `{"unlock":null}`); c != 401 {
		t.Errorf("unlock without a token: %d, want 401", c)
	}
	if c := action("demo", `{"lock":null}`); c != 202 && c != 409 {
		t.Fatalf("owner re-lock: %d", c)
	}
	if l, by := lockedBy(); !l || by != "admin" {
		t.Fatalf("the owner's re-lock took over the admin's lock: locked %v by %q", l, by)
	}
	if c := action("demo", `{"os-stop":null}`); c != 409 {
		t.Errorf("stop of a locked server by its owner: %d, want 409", c)
	}
	if c := action("admin", `{"unlock":null}`); c != 202 {
		t.Fatalf("admin unlock: %d", c)
	}
	if l, by := lockedBy(); l || by != "" {
		t.Fatalf("after the admin's unlock: locked %v by %q", l, by)
	}

	if c := action("demo", `{"lock":null}`); c != 202 {
		t.Fatalf("owner lock: %d", c)
	}
	if l, by := lockedBy(); !l || by != "owner" {
		t.Fatalf("after the owner's lock: locked %v by %q", l, by)
	}
	if c := action("demo", `{"unlock":null}`); c != 202 {
		t.Errorf("owner unlock of its own lock: %d", c)
	}
	if c := action("demo", `{"lock":null}`); c != 202 {
		t.Fatalf("owner lock: %d", c)
	}
	if c := action("admin", `{"unlock":null}`); c != 202 {
		t.Errorf("admin unlock of the owner's lock: %d", c)
	}
}

// The create records whether an admin gave same_host/different_host, so
// the scheduler lets only an admin's hints name other projects' servers.
func TestHintsRecordWhetherAnAdminGaveThem(t *testing.T) {
	f := newFixture(t)
	other := f.create("other", "theirs")
	for _, tc := range []struct {
		token string
		any   bool
	}{{"demo", false}, {"admin", true}} {
		resp, body := f.do("POST", "/v2.1/servers", tc.token, `{"server":{"name":"h-`+tc.token+`","imageRef":"`+imageID+
			`","flavorRef":"1"},"os:scheduler_hints":{"same_host":"`+other+`"}}`)
		if resp.StatusCode != 202 {
			t.Fatalf("create as %s: %d %v", tc.token, resp.StatusCode, body)
		}
		var inst store.Instance
		if err := f.st.DB.Where("id = ?", body["server"].(map[string]any)["id"]).First(&inst).Error; err != nil {
			t.Fatal(err)
		}
		if h := inst.Hints(); h.AnyProject != tc.any || len(h.SameHost) != 1 {
			t.Errorf("hints of %s's server = %+v, want any_project %v", tc.token, h, tc.any)
		}
	}
}

// A server's NICs are ports of its own project that the Compute API bound:
// an admin cannot hand another project's port to a server (Nova's
// PortNotUsable, 400) at boot or attach, and a port merely naming the
// server in device_id is neither listed nor detachable as its interface.
func TestServerNICsAreItsProjectsComputeBoundPorts(t *testing.T) {
	f := newFixture(t)
	n := f.addNetwork("shared", "p-admin", "10.9.0.0/24", true)
	ctx := t.Context()
	theirs, err := f.st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, ProjectID: "p-other"})
	if err != nil {
		t.Fatal(err)
	}
	resp, body := f.do("POST", "/v2.1/servers", "admin",
		`{"server":{"name":"a","imageRef":"`+imageID+`","flavorRef":"1","networks":[{"port":"`+theirs.ID+`"}]}}`)
	expectFault(t, resp, body, 400, "badRequest")

	resp, body = f.do("POST", "/v2.1/servers", "demo",
		`{"server":{"name":"v","imageRef":"`+imageID+`","flavorRef":"1","networks":[{"uuid":"`+n.ID+`"}]}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("boot: %d %v", resp.StatusCode, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	f.activate(id, "h1")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/os-interface", "admin", `{"interfaceAttachment":{"port_id":"`+theirs.ID+`"}}`)
	expectFault(t, resp, body, 400, "badRequest")

	label, err := f.st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, ProjectID: "p-other", DeviceID: id, DeviceOwner: "compute:nova"})
	if err != nil {
		t.Fatal(err)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id+"/os-interface", "demo", "")
	if ifs := body["interfaceAttachments"].([]any); len(ifs) != 1 || ifs[0].(map[string]any)["port_id"] == label.ID {
		t.Errorf("os-interface = %v, want only the server's own port", body)
	}
	resp, body = f.do("DELETE", "/v2.1/servers/"+id+"/os-interface/"+label.ID, "admin", "")
	expectFault(t, resp, body, 404, "itemNotFound")
	_, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	if addrs := body["server"].(map[string]any)["addresses"].(map[string]any)["shared"].([]any); len(addrs) != 1 {
		t.Errorf("addresses = %v, want the server's one address", addrs)
	}
}

// DetachPort (the Networking API's admin delete of a server's port)
// unplugs through the agent exactly as an interface detach does; a busy
// server refuses (Conflict) without touching the agent or the port, and a
// failed unplug leaves the port bound.
func TestDetachPortUnplugsThroughTheAgent(t *testing.T) {
	f := newFixture(t)
	f.addNetwork("net", "p-demo", "10.30.0.0/24", false)
	id := f.netServer("vm")
	ag := f.serveInterfaces("h1")
	port := f.portsOf(id)[0]
	ctx := auth.WithCredentials(t.Context(), &auth.Credentials{UserID: "u-admin", ProjectID: "p-admin",
		Roles: []string{"admin"}, IsAdminProject: true})

	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("task_state", "rebooting").Error; err != nil {
		t.Fatal(err)
	}
	if err := f.svc.DetachPort(ctx, &port); !errdefs.IsConflict(err) {
		t.Fatalf("detach from a busy server: %v, want a conflict", err)
	}
	f.activate(id, "h1")
	ag.failPort(port.ID, errors.New("vif: unplug: stuck"))
	if err := f.svc.DetachPort(ctx, &port); err == nil {
		t.Fatal("a failed unplug succeeded")
	}
	if ports := f.portsOf(id); len(ports) != 1 || ports[0].ID != port.ID {
		t.Fatalf("after a failed unplug the server's ports are %+v, want the port back", ports)
	}
	ag.mu.Lock()
	delete(ag.fail, port.ID)
	ag.mu.Unlock()
	if err := f.svc.DetachPort(ctx, &port); err != nil {
		t.Fatal(err)
	}
	_, detached := ag.calls()
	if len(detached) != 2 || detached[1].PortID != port.ID || detached[1].InstanceID != id {
		t.Fatalf("agent detaches = %+v", detached)
	}
	if ports := f.portsOf(id); len(ports) != 0 {
		t.Errorf("server's ports after the unplug = %+v", ports)
	}
	if _, err := f.st.GetPort(ctx, port.ID); !errors.Is(err, store.ErrPortNotFound) {
		t.Errorf("the port the compute API created is still there: %v", err)
	}
	if !slices.Contains(f.actionNames(id), "detach_interface") {
		t.Errorf("actions = %v, want detach_interface", f.actionNames(id))
	}
}

// ReplugPort (the Networking API's update of a server's port) sends the
// agent the NIC as the database has it, less the addresses being given
// up, in place of the one plugged; a busy server refuses without asking
// the agent, and an agent failure is returned.
func TestReplugPortThroughTheAgent(t *testing.T) {
	f := newFixture(t)
	f.addNetwork("net", "p-demo", "10.31.0.0/24", false)
	id := f.netServer("vm")
	ag := f.serveInterfaces("h1")
	port := f.portsOf(id)[0]
	ctx := t.Context()
	old := port.FixedIPs[0].IPAddress
	if _, err := f.st.UpdatePort(ctx, port.ID, store.PortUpdate{Admin: true, FixedIPs: &[]store.FixedIPRequest{
		{IP: old}, {IP: "10.31.0.77"}}}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("task_state", "rebooting").Error; err != nil {
		t.Fatal(err)
	}
	if err := f.svc.PortPlugReady(ctx, &port); !errdefs.IsConflict(err) {
		t.Fatalf("ready on a busy server: %v, want a conflict", err)
	}
	if err := f.svc.ReplugPort(ctx, &port, []string{old}); !errdefs.IsConflict(err) {
		t.Fatalf("re-plug on a busy server: %v, want a conflict", err)
	}
	if attached, _ := ag.calls(); len(attached) != 0 {
		t.Fatalf("a busy server's agent was asked: %+v", attached)
	}
	f.activate(id, "h1")
	if err := f.svc.PortPlugReady(ctx, &port); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.ReplugPort(ctx, &port, []string{old}); err != nil {
		t.Fatal(err)
	}
	attached, _ := ag.calls()
	if len(attached) != 1 || attached[0].NIC.PortID != port.ID || len(attached[0].NIC.IPs) != 1 ||
		attached[0].NIC.IPs[0].Address != "10.31.0.77" {
		t.Fatalf("agent attaches = %+v, want the port with only 10.31.0.77", attached)
	}
	ag.failPort(port.ID, errors.New("vif: plug: stuck"))
	if err := f.svc.ReplugPort(ctx, &port, nil); err == nil {
		t.Fatal("a failed re-plug succeeded")
	}
}
