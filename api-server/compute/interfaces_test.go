package compute

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// ifaceAgent stands in for a host's agent: it records the attach and
// detach requests it gets and fails the ones whose port is in fail (with
// that error); every other message is acknowledged.
type ifaceAgent struct {
	mu       sync.Mutex
	attached []protocol.AttachInterface
	detached []protocol.DetachInterface
	refresh  []protocol.RefreshFirewall
	fail     map[string]error
}

func (f *fixture) serveInterfaces(host string) *ifaceAgent {
	f.t.Helper()
	ag := &ifaceAgent{fail: map[string]error{}}
	h := func(_ context.Context, m bus.Message) (any, error) {
		ag.mu.Lock()
		defer ag.mu.Unlock()
		switch m.Kind {
		case protocol.KindAttachInterface:
			var req protocol.AttachInterface
			if err := m.Decode(&req); err != nil {
				return nil, err
			}
			ag.attached = append(ag.attached, req)
			for _, k := range []string{req.NIC.PortID, "*"} {
				if err, ok := ag.fail[k]; ok {
					return nil, err
				}
			}
			return protocol.InterfaceReply{Live: true}, nil
		case protocol.KindRefreshFirewall:
			var req protocol.RefreshFirewall
			if err := m.Decode(&req); err != nil {
				return nil, err
			}
			ag.refresh = append(ag.refresh, req)
			return nil, nil
		case protocol.KindDetachInterface:
			var req protocol.DetachInterface
			if err := m.Decode(&req); err != nil {
				return nil, err
			}
			ag.detached = append(ag.detached, req)
			if err, ok := ag.fail[req.PortID]; ok {
				return nil, err
			}
			return protocol.InterfaceReply{Live: true}, nil
		}
		return nil, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.t.Cleanup(cancel)
	if err := f.bus.Consume(ctx, bus.ComputeQueue(host), h); err != nil {
		f.t.Fatal(err)
	}
	return ag
}

func (ag *ifaceAgent) failPort(portID string, err error) {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	ag.fail[portID] = err
}

// failAttaches makes the agent stand-in fail every attach (the port id is
// not known before the API allocates it).
func (ag *ifaceAgent) failAttaches() {
	ag.failPort("*", errors.New("attach port: vif: plug: veth exploded"))
}

func (ag *ifaceAgent) calls() ([]protocol.AttachInterface, []protocol.DetachInterface) {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	return slices.Clone(ag.attached), slices.Clone(ag.detached)
}

// netServer is an active server on h1 with one port on n (the project's
// only network when it was created).
func (f *fixture) netServer(name string) string {
	f.t.Helper()
	id := f.create("demo", name)
	f.activate(id, "h1")
	if len(f.portsOf(id)) != 1 {
		f.t.Fatalf("server %s has ports %+v, want one", id, f.portsOf(id))
	}
	return id
}

func (f *fixture) ownedPorts(id string) []string {
	f.t.Helper()
	inst := f.instance(id)
	return inst.OwnedPortList()
}

func (f *fixture) actionNames(id string) []string {
	f.t.Helper()
	_, body := f.do("GET", "/v2.1/servers/"+id+"/os-instance-actions", "demo", "")
	var out []string
	for _, a := range body["instanceActions"].([]any) {
		out = append(out, a.(map[string]any)["action"].(string))
	}
	return out
}

// Attach on a network, show, list and detach answer what Tempest's
// interfaces schemas say; the agent gets the NIC as the scheduler
// describes it at boot; the port is the server's (owned, bound to its
// host, ACTIVE) until the detach deletes it and frees its address.
func TestContractInterfaceAttachDetach(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	netA := f.addNetwork("netA", "p-demo", "10.20.0.0/24", false)
	id := f.netServer("if1")
	netB := f.addNetwork("netB", "p-demo", "10.21.0.0/24", false)
	ag := f.serveInterfaces("h1")
	v := apiVersion{2, 1}
	base := "/v2.1/servers/" + id + "/os-interface"

	body := f.check(t, ts, v, contractCall{token: "demo", method: "POST", path: base,
		body:   `{"interfaceAttachment":{"net_id":"` + netB.ID + `","fixed_ips":[{"ip_address":"10.21.0.30"}]}}`,
		module: "interfaces", schema: "get_create_interfaces"})
	att := body["interfaceAttachment"].(map[string]any)
	portID := att["port_id"].(string)
	if att["net_id"] != netB.ID || att["port_state"] != "ACTIVE" ||
		att["fixed_ips"].([]any)[0].(map[string]any)["ip_address"] != "10.21.0.30" {
		t.Errorf("attachment = %v", att)
	}
	// The new port joins the default security group, so the server's
	// other port (a member of it) may be re-plugged with the new member
	// in its filter, asynchronously: only the requests for the new port
	// count here.
	all, _ := ag.calls()
	attached := slices.DeleteFunc(slices.Clone(all), func(a protocol.AttachInterface) bool { return a.NIC.PortID != portID })
	if len(attached) != 1 {
		t.Fatalf("agent got %d attach requests for the new port (of %d: %+v)", len(attached), len(all), all)
	}
	nic := attached[0].NIC
	if attached[0].InstanceID != id || nic.PortID != portID || nic.MAC != att["mac_addr"] || nic.NetworkType != "vlan" ||
		nic.SegmentationID == 0 || len(nic.IPs) != 1 || nic.IPs[0].Address != "10.21.0.30" || nic.IPs[0].PrefixLen != 24 ||
		attached[0].Deadline.IsZero() {
		t.Errorf("attach request = %+v", attached[0])
	}
	p, err := f.st.GetPort(context.Background(), portID)
	if err != nil || p.DeviceID != id || p.BindingHostID != "h1" || p.Status != store.PortActive || p.DeviceOwner != "compute:nova" {
		t.Fatalf("port = %+v, %v", p, err)
	}
	if owned := f.ownedPorts(id); len(owned) != 2 || !slices.Contains(owned, portID) {
		t.Errorf("owned ports = %v", owned)
	}

	shown := f.check(t, ts, v, contractCall{token: "demo", method: "GET", path: base + "/" + portID,
		module: "interfaces", schema: "get_create_interfaces"})
	if shown["interfaceAttachment"].(map[string]any)["port_id"] != portID {
		t.Errorf("show = %v", shown)
	}
	list := f.check(t, ts, v, contractCall{token: "demo", method: "GET", path: base, module: "interfaces", schema: "list_interfaces"})
	var nets []string
	for _, it := range list["interfaceAttachments"].([]any) {
		nets = append(nets, it.(map[string]any)["net_id"].(string))
	}
	if !slices.Contains(nets, netA.ID) || !slices.Contains(nets, netB.ID) || len(nets) != 2 {
		t.Errorf("list nets = %v", nets)
	}

	f.check(t, ts, v, contractCall{token: "demo", method: "DELETE", path: base + "/" + portID,
		module: "interfaces", schema: "delete_interface"})
	_, detached := ag.calls()
	if len(detached) != 1 || detached[0].PortID != portID || detached[0].NIC.MAC != nic.MAC {
		t.Errorf("detach requests = %+v", detached)
	}
	if _, err := f.st.GetPort(context.Background(), portID); !errors.Is(err, store.ErrPortNotFound) {
		t.Errorf("owned port after detach: %v", err)
	}
	if owned := f.ownedPorts(id); len(owned) != 1 || slices.Contains(owned, portID) {
		t.Errorf("owned ports after detach = %v", owned)
	}
	resp, fault := f.do("GET", base+"/"+portID, "demo", "")
	expectFault(t, resp, fault, 404, "itemNotFound")
	// The address is free again.
	resp, body = f.do("POST", base, "demo", `{"interfaceAttachment":{"net_id":"`+netB.ID+`","fixed_ips":[{"ip_address":"10.21.0.30"}]}}`)
	if resp.StatusCode != 200 {
		t.Errorf("re-attach with the freed address: %d %v", resp.StatusCode, body)
	}
	acts := f.actionNames(id)
	if n := strings.Count(strings.Join(acts, ","), "attach_interface"); n != 2 || !slices.Contains(acts, "detach_interface") {
		t.Errorf("instance actions = %v", acts)
	}
}

// A user's port is bound to the server and its host, and on detach only
// unbound: it stays, DOWN, with its address.
func TestInterfaceAttachUserPort(t *testing.T) {
	f := newFixture(t)
	f.addNetwork("netA", "p-demo", "10.20.0.0/24", false)
	id := f.netServer("if2")
	netB := f.addNetwork("netB", "p-demo", "10.21.0.0/24", false)
	ag := f.serveInterfaces("h1")
	ctx := context.Background()
	up, err := f.st.AllocatePort(ctx, store.PortRequest{NetworkID: netB.ID, ProjectID: "p-demo"})
	if err != nil {
		t.Fatal(err)
	}
	base := "/v2.1/servers/" + id + "/os-interface"
	resp, body := f.do("POST", base, "demo", `{"interfaceAttachment":{"port_id":"`+up.ID+`"}}`)
	if resp.StatusCode != 200 || body["interfaceAttachment"].(map[string]any)["port_id"] != up.ID {
		t.Fatalf("attach port: %d %v", resp.StatusCode, body)
	}
	p, _ := f.st.GetPort(ctx, up.ID)
	if p.DeviceID != id || p.BindingHostID != "h1" || p.Status != store.PortActive {
		t.Errorf("bound port = %+v", p)
	}
	if slices.Contains(f.ownedPorts(id), up.ID) {
		t.Error("a user's port was recorded as owned by the server")
	}
	// Requests for the server's other port are security group refilters.
	if all, _ := ag.calls(); len(slices.DeleteFunc(slices.Clone(all), func(a protocol.AttachInterface) bool { return a.NIC.PortID != up.ID })) != 1 {
		t.Errorf("agent attach requests = %+v, want one for port %s", all, up.ID)
	}
	resp, body = f.do("DELETE", base+"/"+up.ID, "demo", "")
	if resp.StatusCode != 202 {
		t.Fatalf("detach: %d %v", resp.StatusCode, body)
	}
	p, err = f.st.GetPort(ctx, up.ID)
	if err != nil || p.DeviceID != "" || p.BindingHostID != "" || p.Status != store.PortDown || len(p.FixedIPs) != 1 {
		t.Errorf("user port after detach = %+v, %v", p, err)
	}
}

// An attach without port or network takes the project's network.
func TestInterfaceAttachDefaultNetwork(t *testing.T) {
	f := newFixture(t)
	n := f.addNetwork("netA", "p-demo", "10.20.0.0/24", false)
	id := f.netServer("if3")
	f.serveInterfaces("h1")
	for _, body := range []string{`{}`, `{"interfaceAttachment":{}}`} {
		resp, got := f.do("POST", "/v2.1/servers/"+id+"/os-interface", "demo", body)
		if resp.StatusCode != 200 || got["interfaceAttachment"].(map[string]any)["net_id"] != n.ID {
			t.Errorf("%s: %d %v", body, resp.StatusCode, got)
		}
	}
	if got := len(f.portsOf(id)); got != 3 {
		t.Errorf("ports = %d, want 3", got)
	}
}

// Every bad request gets Nova's status and fault, and leaves no port
// behind.
func TestInterfaceAttachErrors(t *testing.T) {
	f := newFixture(t)
	netA := f.addNetwork("netA", "p-demo", "10.20.0.0/24", false)
	id := f.netServer("if4")
	other := f.netServer("if5")
	theirs := f.addNetwork("theirs", "p-other", "10.30.0.0/24", false)
	ag := f.serveInterfaces("h1")
	ctx := context.Background()
	used := f.portsOf(other)[0]
	base := "/v2.1/servers/" + id + "/os-interface"
	const missing = "00000000-0000-4000-8000-000000000000"
	for _, c := range []struct {
		name, path, body string
		status           int
		fault            string
	}{
		{"unknown server", "/v2.1/servers/" + missing + "/os-interface", `{}`, 404, "itemNotFound"},
		{"unknown network", base, `{"interfaceAttachment":{"net_id":"` + missing + `"}}`, 404, "itemNotFound"},
		{"other project's network", base, `{"interfaceAttachment":{"net_id":"` + theirs.ID + `"}}`, 404, "itemNotFound"},
		{"unknown port", base, `{"interfaceAttachment":{"port_id":"` + missing + `"}}`, 404, "itemNotFound"},
		{"port in use", base, `{"interfaceAttachment":{"port_id":"` + used.ID + `"}}`, 409, "conflictingRequest"},
		{"fixed IP taken", base, `{"interfaceAttachment":{"net_id":"` + netA.ID + `","fixed_ips":[{"ip_address":"` + used.FixedIPs[0].IPAddress + `"}]}}`, 409, "conflictingRequest"},
		{"fixed IP outside the subnet", base, `{"interfaceAttachment":{"net_id":"` + netA.ID + `","fixed_ips":[{"ip_address":"10.99.0.5"}]}}`, 400, "badRequest"},
		{"bad fixed IP", base, `{"interfaceAttachment":{"net_id":"` + netA.ID + `","fixed_ips":[{"ip_address":"nope"}]}}`, 400, "badRequest"},
		{"fixed IP without network", base, `{"interfaceAttachment":{"fixed_ips":[{"ip_address":"10.20.0.9"}]}}`, 400, "badRequest"},
		{"port and network", base, `{"interfaceAttachment":{"port_id":"` + used.ID + `","net_id":"` + netA.ID + `"}}`, 400, "badRequest"},
		{"bad network id", base, `{"interfaceAttachment":{"net_id":"nope"}}`, 400, "badRequest"},
		{"malformed body", base, `{"interfaceAttachment":`, 400, "badRequest"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := f.do("POST", c.path, "demo", c.body)
			expectFault(t, resp, body, c.status, c.fault)
		})
	}
	if got := len(f.portsOf(id)); got != 1 {
		t.Errorf("ports after bad attaches = %d, want 1", got)
	}

	// The agent fails: 500, and the port it was given is gone, its
	// address free, the failure recorded on the action.
	var nPorts int64
	f.st.DB.Model(&store.Port{}).Count(&nPorts)
	ag.failAttaches()
	resp, body := f.do("POST", base, "demo", `{"interfaceAttachment":{"net_id":"`+netA.ID+`","fixed_ips":[{"ip_address":"10.20.0.77"}]}}`)
	expectFault(t, resp, body, 500, "computeFault")
	if msg := body["computeFault"].(map[string]any)["message"].(string); !strings.Contains(msg, "veth exploded") {
		t.Errorf("message %q does not carry the agent's reason", msg)
	}
	var after int64
	f.st.DB.Model(&store.Port{}).Count(&after)
	if after != nPorts || len(f.ownedPorts(id)) != 1 {
		t.Errorf("ports %d -> %d, owned %v: the failed attach left its port", nPorts, after, f.ownedPorts(id))
	}
	if _, err := f.st.AllocatePort(ctx, store.PortRequest{NetworkID: netA.ID, ProjectID: "p-demo",
		FixedIPs: []store.FixedIPRequest{{IP: "10.20.0.77"}}}); err != nil {
		t.Errorf("the failed attach's address is still taken: %v", err)
	}
	var failed store.InstanceAction
	f.st.DB.Where("instance_id = ? AND action = ?", id, "attach_interface").Order("id DESC").First(&failed)
	if failed.Message == nil || *failed.Message != "Error" {
		t.Errorf("failed attach action = %+v", failed)
	}
}

// States and servers the attach and detach refuse, and a detach the agent
// fails (the port is bound back).
func TestInterfaceStateAndDetachErrors(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "nonet") // before any network: no NIC, no sandbox
	f.activate(id, "h1")
	f.addNetwork("netA", "p-demo", "10.20.0.0/24", false)
	ag := f.serveInterfaces("h1")
	resp, body := f.do("POST", "/v2.1/servers/"+id+"/os-interface", "demo", `{}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if msg := body["conflictingRequest"].(map[string]any)["message"].(string); !strings.Contains(msg, "network sandbox") {
		t.Errorf("no-network message %q", msg)
	}

	srv := f.netServer("st")
	base := "/v2.1/servers/" + srv + "/os-interface"
	for _, st := range []struct{ vm, task string }{{"error", ""}, {"active", "rebooting"}, {"building", ""}} {
		f.st.DB.Model(&store.Instance{}).Where("id = ?", srv).Updates(map[string]any{"vm_state": st.vm, "task_state": st.task})
		resp, body := f.do("POST", base, "demo", `{}`)
		expectFault(t, resp, body, 409, "conflictingRequest")
		resp, body = f.do("DELETE", base+"/"+f.portsOf(srv)[0].ID, "demo", "")
		expectFault(t, resp, body, 409, "conflictingRequest")
	}
	f.st.DB.Model(&store.Instance{}).Where("id = ?", srv).Updates(map[string]any{"vm_state": string(lifecycle.Stopped), "task_state": ""})
	resp, body = f.do("POST", base, "demo", `{}`)
	if resp.StatusCode != 200 {
		t.Fatalf("attach to a stopped server: %d %v", resp.StatusCode, body)
	}
	f.activate(srv, "h1")

	// Not this server's port, unknown port: 404.
	other := f.netServer("other")
	for _, port := range []string{f.portsOf(other)[0].ID, "00000000-0000-4000-8000-000000000000"} {
		resp, body := f.do("DELETE", base+"/"+port, "demo", "")
		expectFault(t, resp, body, 404, "itemNotFound")
		resp, body = f.do("GET", base+"/"+port, "demo", "")
		expectFault(t, resp, body, 404, "itemNotFound")
	}
	// Another project sees no server.
	resp, body = f.do("DELETE", base+"/"+f.portsOf(srv)[0].ID, "other", "")
	expectFault(t, resp, body, 404, "itemNotFound")

	// The agent cannot unplug: 500 and the port is still the server's.
	port := f.portsOf(srv)[0]
	ag.failPort(port.ID, errors.New("unplug: ovs-vsctl timed out"))
	resp, body = f.do("DELETE", base+"/"+port.ID, "demo", "")
	expectFault(t, resp, body, 500, "computeFault")
	// The agent finds no network sandbox (its FailedPrecondition crosses
	// the bus): 409 with the agent's words.
	ag.failPort(port.ID, fmt.Errorf("detach from %s: %w", srv, errdefs.FailedPrecondition("the instance has no network sandbox")))
	resp, body = f.do("DELETE", base+"/"+port.ID, "demo", "")
	expectFault(t, resp, body, 409, "conflictingRequest")
	if msg := body["conflictingRequest"].(map[string]any)["message"].(string); msg !=
		"Failed to detach network adapter device from "+srv+": detach from "+srv+": the instance has no network sandbox" {
		t.Errorf("no-sandbox message %q", msg)
	}
	p, err := f.st.GetPort(context.Background(), port.ID)
	if err != nil || p.DeviceID != srv || p.BindingHostID != "h1" || p.Status != store.PortActive {
		t.Errorf("port after a failed detach = %+v, %v", p, err)
	}
}
