package network_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/network"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// sharedNet makes an admin's shared VLAN network with a subnet.
func (e *env) sharedNet(vlan int, cidr string) obj {
	e.t.Helper()
	n := e.network("admin", obj{"name": "public", "shared": true, "provider:network_type": "vlan", "provider:segmentation_id": vlan})
	e.subnet("admin", obj{"network_id": n["id"], "cidr": cidr})
	return n
}

// Port security (the anti-spoofing flows) on a shared network is its
// owner's and the admins' to turn off, as in Neutron's policy: another
// project's member gets 403 PolicyNotAuthorized on create and update,
// and its port keeps port security; it may still ask for it on.
func TestPortSecurityOffOnSharedNetworkIsTheOwners(t *testing.T) {
	e := newEnv(t)
	n := e.sharedNet(500, "172.16.0.0/24")
	for _, v := range []any{false, "False"} {
		e.fails(http.StatusForbidden, "PolicyNotAuthorized", "POST", "/v2.0/ports", "bob",
			obj{"port": obj{"network_id": n["id"], "port_security_enabled": v}})
	}
	p := e.port("bob", obj{"network_id": n["id"], "port_security_enabled": true})
	path := "/v2.0/ports/" + p["id"].(string)
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "PUT", path, "bob", obj{"port": obj{"port_security_enabled": false}})
	if got := e.must(http.StatusOK, "GET", path, "bob", nil)["port"].(obj); got["port_security_enabled"] != true {
		t.Fatalf("bob's port after the refused update: %v", got)
	}
	e.must(http.StatusOK, "PUT", path, "bob", obj{"port": obj{"port_security_enabled": true, "name": "p"}})

	// The network's owner (here an admin) may; so may a project on its
	// own network.
	adm := e.port("admin", obj{"network_id": n["id"], "port_security_enabled": false})
	if adm["port_security_enabled"] != false {
		t.Fatalf("admin's port %v", adm)
	}
	// As in Neutron, the port leaves its groups in the same update.
	e.fails(http.StatusConflict, "PortSecurityPortHasSecurityGroup", "PUT", path, "admin", obj{"port": obj{"port_security_enabled": false}})
	if got := e.must(http.StatusOK, "PUT", path, "admin", obj{"port": obj{"port_security_enabled": false, "security_groups": []string{}}})["port"].(obj); got["port_security_enabled"] != false {
		t.Fatalf("admin's update of bob's port: %v", got)
	}
	own := e.network("alice", obj{"name": "own"})
	e.subnet("alice", obj{"network_id": own["id"], "cidr": "10.50.0.0/24"})
	if p := e.port("alice", obj{"network_id": own["id"], "port_security_enabled": false}); p["port_security_enabled"] != false {
		t.Fatalf("alice's port on her own network: %v", p)
	}
}

// addServer records a live server of project, as the Compute API does.
func (e *env) addServer(id, project string) {
	e.t.Helper()
	if err := e.st.DB.Create(&store.Instance{ID: id, Name: id, ProjectID: project, UserID: "u-" + project}).Error; err != nil {
		e.t.Fatal(err)
	}
}

// serverNICs is what the agent would plug into server id of project.
func (e *env) serverNICs(id, project string) []string {
	e.t.Helper()
	ports, err := e.st.ServerPorts(context.Background(), id, project)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, p := range ports {
		out = append(out, p.ID)
	}
	return out
}

// The device_id hijack: a member cannot create or update a port naming
// another project's server (Neutron's DeviceIDNotOwnedByTenant, 409), nor
// use network:* owners or binding:profile (403); what it may write (its
// own server's id, any non-server id) is a label that makes no NIC. A port
// the Compute API bound keeps its device until the Compute API lets go
// (PortInUse, 409, admins included).
func TestPortDeviceIDHijack(t *testing.T) {
	e := newEnv(t)
	n := e.sharedNet(501, "172.17.0.0/24")
	e.addServer("victim-vm", "p1")
	e.addServer("bob-vm", "p2")

	for _, owner := range []string{"compute:nova", "", "compute:evil"} {
		e.fails(http.StatusConflict, "DeviceIDNotOwnedByTenant", "POST", "/v2.0/ports", "bob",
			obj{"port": obj{"network_id": n["id"], "device_id": "victim-vm", "device_owner": owner}})
	}
	p := e.port("bob", obj{"network_id": n["id"]})
	path := "/v2.0/ports/" + p["id"].(string)
	e.fails(http.StatusConflict, "DeviceIDNotOwnedByTenant", "PUT", path, "bob",
		obj{"port": obj{"device_id": "victim-vm", "device_owner": "compute:nova"}})
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "PUT", path, "bob", obj{"port": obj{"device_owner": "network:router_gateway"}})
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "POST", "/v2.0/ports", "bob",
		obj{"port": obj{"network_id": n["id"], "binding:profile": obj{"x": "y"}}})

	// Labels: bob's own server, or an id that is no server. No NIC.
	e.must(http.StatusOK, "PUT", path, "bob", obj{"port": obj{"device_id": "bob-vm", "device_owner": "compute:nova"}})
	e.port("bob", obj{"network_id": n["id"], "device_id": "not-a-server", "device_owner": "compute:nova"})
	// An admin may write any label: still no NIC of the victim.
	e.port("admin", obj{"network_id": n["id"], "device_id": "victim-vm", "device_owner": "compute:nova"})
	if nics := e.serverNICs("victim-vm", "p1"); len(nics) != 0 {
		t.Fatalf("victim's NICs = %v, want none", nics)
	}
	if nics := e.serverNICs("bob-vm", "p2"); len(nics) != 0 {
		t.Fatalf("bob-vm's NICs = %v, want none (a Networking API label)", nics)
	}

	// The victim's own NIC, bound by the Compute API: its device is the
	// Compute API's to change.
	nic, err := e.st.AllocatePort(context.Background(), store.PortRequest{NetworkID: n["id"].(string), ProjectID: "p1",
		DeviceID: "victim-vm", DeviceOwner: "compute:nova", ComputeBound: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"alice", "admin"} {
		e.fails(http.StatusConflict, "PortInUse", "PUT", "/v2.0/ports/"+nic.ID, tok, obj{"port": obj{"device_id": ""}})
		e.fails(http.StatusConflict, "PortInUse", "PUT", "/v2.0/ports/"+nic.ID, tok, obj{"port": obj{"device_owner": "compute:x"}})
	}
	e.must(http.StatusOK, "PUT", "/v2.0/ports/"+nic.ID, "alice", obj{"port": obj{"name": "eth0", "device_id": "victim-vm"}})
	if nics := e.serverNICs("victim-vm", "p1"); len(nics) != 1 || nics[0] != nic.ID {
		t.Fatalf("victim's NICs = %v, want [%s]", nics, nic.ID)
	}
}

// detacherFunc is the Compute API's unplug as the test wants it.
type detacherFunc func(ctx context.Context, p *store.Port) error

func (f detacherFunc) DetachPort(ctx context.Context, p *store.Port) error { return f(ctx, p) }

// A server's NIC is not a member's to delete through the port API (409
// ServicePortInUse: detach it with the Compute API); an admin's delete
// unplugs it through the Compute API first and frees the address only
// after that succeeded. Labels (device_id written through this API) are
// plain ports.
func TestDeletePortBoundToServer(t *testing.T) {
	st := storetest.SQLite(t)
	var unplugged []string
	fail := error(nil)
	det := detacherFunc(func(_ context.Context, p *store.Port) error {
		if fail != nil {
			return fail
		}
		unplugged = append(unplugged, p.ID)
		_, err := st.BindPort(context.Background(), p.ID, "", "", "")
		return err
	})
	svc := network.New(callers, network.WithStore(st), network.WithConfig(netConfig), network.WithPortDetacher(det))
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	e := &env{t: t, srv: srv, st: st}
	n := e.network("alice", obj{"name": "own"})
	e.subnet("alice", obj{"network_id": n["id"], "cidr": "10.51.0.0/24"})
	e.addServer("vm", "p1")
	nic, err := st.AllocatePort(context.Background(), store.PortRequest{NetworkID: n["id"].(string), ProjectID: "p1",
		DeviceID: "vm", DeviceOwner: "compute:nova", ComputeBound: true, HostID: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	path := "/v2.0/ports/" + nic.ID
	// Tenant isolation first: another project does not learn the port
	// exists (404, not 409), a reader may not write, no token is a 401.
	e.fails(http.StatusNotFound, "PortNotFound", "DELETE", path, "bob", nil)
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "DELETE", path, "reader", nil)
	e.fails(http.StatusUnauthorized, "", "DELETE", path, "", nil)
	e.fails(http.StatusUnauthorized, "", "DELETE", path, "garbage", nil)
	e.fails(http.StatusNotFound, "PortNotFound", "PUT", path, "bob", obj{"port": obj{"device_id": ""}})
	e.fails(http.StatusConflict, "ServicePortInUse", "DELETE", path, "alice", nil)
	fail = errdefs.Conflict("server busy")
	e.fails(http.StatusConflict, "PortInUse", "DELETE", path, "admin", nil)
	if _, err := st.GetPort(context.Background(), nic.ID); err != nil {
		t.Fatalf("the port went with a refused delete: %v", err)
	}
	fail = nil
	e.must(http.StatusNoContent, "DELETE", path, "admin", nil)
	if len(unplugged) != 1 || unplugged[0] != nic.ID {
		t.Fatalf("unplugged %v, want [%s]", unplugged, nic.ID)
	}
	if _, err := st.GetPort(context.Background(), nic.ID); !errors.Is(err, store.ErrPortNotFound) {
		t.Fatalf("port after the admin's delete: %v", err)
	}
	label := e.port("alice", obj{"network_id": n["id"], "device_id": "vm", "device_owner": "compute:nova"})
	e.must(http.StatusNoContent, "DELETE", "/v2.0/ports/"+label["id"].(string), "alice", nil)
	if len(unplugged) != 1 {
		t.Errorf("deleting a label unplugged something: %v", unplugged)
	}

	// Without the Compute API at hand, an admin's delete is refused too.
	nic2, err := st.AllocatePort(context.Background(), store.PortRequest{NetworkID: n["id"].(string), ProjectID: "p1",
		DeviceID: "vm", DeviceOwner: "compute:nova", ComputeBound: true})
	if err != nil {
		t.Fatal(err)
	}
	bare := newEnvOn(t, st)
	bare.fails(http.StatusConflict, "ServicePortInUse", "DELETE", "/v2.0/ports/"+nic2.ID, "admin", nil)
}
