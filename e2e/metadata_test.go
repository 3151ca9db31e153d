package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
)

// metaData reads http://169.254.169.254/openstack/latest/meta_data.json
// from inside s with busybox wget (a few tries: the first ARP and the
// agent's first fetch take a moment); ok is false when nothing answered.
func (s *netServer) metaData(t *testing.T, tries int) (md map[string]any, raw string, ok bool) {
	t.Helper()
	for i := 0; i < tries; i++ {
		out, err := s.exec("timeout", "5", "wget", "-qO-", "http://169.254.169.254/openstack/latest/meta_data.json")
		if err == nil {
			if jerr := json.Unmarshal([]byte(out), &md); jerr != nil {
				t.Fatalf("meta_data.json of %s is no JSON: %v: %q", s.name, jerr, out)
			}
			return md, out, true
		}
		raw = out
		time.Sleep(time.Second)
	}
	return nil, raw, false
}

// demoNetwork creates, as demo, a tenant network with subnet cidr (a VLAN
// of the tenant range) and returns its id.
func demoNetwork(t *testing.T, c *cloud, name, cidr string) string {
	t.Helper()
	nc := c.networkClient(t, "demo", c.demoPass, "demo")
	n, err := networks.Create(context.Background(), nc, networks.CreateOpts{Name: name}).Extract()
	if err != nil {
		t.Fatalf("demo creates network %s: %v", name, err)
	}
	if _, err := subnets.Create(context.Background(), nc, subnets.CreateOpts{NetworkID: n.ID, CIDR: cidr,
		IPVersion: 4}).Extract(); err != nil {
		t.Fatalf("demo creates subnet %s: %v", cidr, err)
	}
	return n.ID
}

// TestMetadataService: from inside each server, http://169.254.169.254/
// answers with that server's own metadata — on both hosts, with no router
// on the VLAN — even for two servers of two projects with the same address
// on different VLANs (the server is named by its port, not its address);
// a server that takes another's address reads nothing; a server posts its
// password to the password endpoint once and its owner reads and clears it
// (os-server-password); the service survives an agent restart and a cold
// migration, which also applies a 2.90 hostname inside the server.
func TestMetadataService(t *testing.T) {
	t.Parallel()
	c := startCloud(t, twoHosts)
	ctx := context.Background()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	netA, _ := vlanNetwork(t, nc, "md-a", 311, "10.78.0.0/24", true)
	h0, h1 := c.hosts[0], c.hosts[1]

	a := activeServer(t, cc, nc, "md-a", c.bootOn(t, cc, "md-a", h0, netA, "10.78.0.10"), h0)
	s := activeServer(t, cc, nc, "md-s", c.bootOn(t, cc, "md-s", h1, netA, "10.78.0.11"), h1)

	// demo's server: another project, another VLAN, the same address as a.
	dcc := c.computeClient(t, "demo", c.demoPass, "demo")
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	netB := demoNetwork(t, c, "md-b", "10.78.0.0/24")
	srv, err := servers.Create(ctx, dcc, servers.CreateOpts{Name: "md-b", ImageRef: img, FlavorRef: "1",
		Networks: []servers.Network{{UUID: netB, FixedIP: "10.78.0.10"}}}, nil).Extract()
	if err != nil {
		t.Fatalf("demo creates md-b: %v", err)
	}
	waitStatus(t, dcc, srv.ID, "ACTIVE", 90*time.Second)
	var ext struct {
		Host string `json:"OS-EXT-SRV-ATTR:host"`
	}
	if err := servers.Get(ctx, cc, srv.ID).ExtractInto(&ext); err != nil {
		t.Fatal(err)
	}
	bHost := h0
	if ext.Host == h1.name {
		bHost = h1
	}
	b := &netServer{name: "md-b", id: srv.ID, host: bHost, ip: "10.78.0.10"}

	for _, x := range []*netServer{a, s, b} {
		md, raw, ok := x.metaData(t, 10)
		if !ok {
			c.metadataState(t, x)
			t.Fatalf("%s (on %s) cannot read its metadata: %s", x.name, x.host.name, raw)
		}
		if md["uuid"] != x.id || md["name"] != x.name {
			t.Errorf("%s reads uuid %v name %v, want its own %s", x.name, md["uuid"], md["name"], x.id)
		}
	}
	if out, err := b.exec("timeout", "5", "wget", "-qO-", "http://169.254.169.254/latest/meta-data/instance-id"); err != nil ||
		!strings.HasPrefix(out, "i-"+strings.ReplaceAll(b.id, "-", "")[:8]) {
		t.Errorf("EC2 instance-id of md-b = %q (%v)", out, err)
	}
	if out, err := a.exec("timeout", "5", "wget", "-qO-", "http://169.254.169.254/latest/meta-data/local-ipv4"); err != nil || out != a.ip {
		t.Errorf("EC2 local-ipv4 of md-a = %q (%v)", out, err)
	}

	// The password endpoint: md-b posts its (encrypted) password once,
	// reads it back, md-a still reads its own empty one; md-b's owner
	// reads it with os-server-password and clears it, then md-b may post
	// again.
	t.Run("password", func(t *testing.T) {
		const url = "http://169.254.169.254/openstack/latest/password"
		post := func(x *netServer, body string) (string, error) {
			return x.exec("timeout", "5", "wget", "-qO-", "--post-data="+body, url)
		}
		if out, err := post(b, "ZW5jLWI="); err != nil {
			t.Fatalf("md-b posts its password: %v %q", err, out)
		}
		if out, err := b.exec("timeout", "5", "wget", "-qO-", url); err != nil || out != "ZW5jLWI=" {
			t.Errorf("md-b reads its password %q (%v)", out, err)
		}
		if out, err := post(b, "YWdhaW4="); err == nil || !strings.Contains(out, "409") {
			t.Errorf("md-b's second post: %v %q, want 409", err, out)
		}
		if out, err := a.exec("timeout", "5", "wget", "-qO-", url); err != nil || out != "" {
			t.Errorf("md-a reads password %q (%v), want its own empty one", out, err)
		}
		got, err := servers.GetPassword(ctx, dcc, b.id).ExtractPassword(nil)
		if err != nil || got != "ZW5jLWI=" {
			t.Errorf("os-server-password of md-b: %q %v", got, err)
		}
		if got, err := servers.GetPassword(ctx, dcc, a.id).ExtractPassword(nil); err == nil {
			t.Errorf("demo reads admin's md-a password %q", got)
		}
		if _, err := dcc.Delete(ctx, dcc.ServiceURL("servers", b.id, "os-server-password"), nil); err != nil {
			t.Fatalf("clear md-b's password: %v", err)
		}
		if got, err := servers.GetPassword(ctx, dcc, b.id).ExtractPassword(nil); err != nil || got != "" {
			t.Errorf("after clear: %q %v", got, err)
		}
		if out, err := post(b, "bmV3"); err != nil {
			t.Fatalf("md-b posts again after the clear: %v %q", err, out)
		}
		if out, err := b.exec("timeout", "5", "wget", "-qO-", url); err != nil || out != "bmV3" {
			t.Errorf("md-b reads its new password %q (%v)", out, err)
		}
	})

	// s takes a's address: its requests match none of its port's flows
	// and anti-spoofing drops them; it never reads a's metadata.
	t.Run("forged address", func(t *testing.T) {
		s.netns(t, "ip", "addr", "del", s.ip+"/24", "dev", "eth0")
		s.netns(t, "ip", "addr", "add", a.ip+"/24", "dev", "eth0")
		s.netns(t, "ip", "route", "replace", "169.254.169.254/32", "dev", "eth0", "scope", "link")
		if md, raw, ok := s.metaData(t, 2); ok || strings.Contains(raw, a.id) {
			t.Errorf("md-s with md-a's address read metadata %v %q", md, raw)
		}
		s.netns(t, "ip", "addr", "del", a.ip+"/24", "dev", "eth0")
		s.netns(t, "ip", "addr", "add", s.ip+"/24", "dev", "eth0")
		s.netns(t, "ip", "route", "replace", "169.254.169.254/32", "dev", "eth0", "scope", "link", "src", s.ip)
		if md, raw, ok := s.metaData(t, 5); !ok || md["uuid"] != s.id {
			c.metadataState(t, s)
			t.Errorf("md-s with its own address again: %v %q", md, raw)
		}
	})

	// The agent restarts: its metadata port comes back and serves again;
	// its start-up reconcile finds md-a's (and md-b's) plumbing and limits
	// in place and leaves them alone (no re-plug, no docker update).
	t.Run("agent restart", func(t *testing.T) {
		p := c.proc(t, "agent-"+h0.name)
		const plugged, resized = `msg="plugged NICs"`, `msg="container resized"`
		nPlug, nResize, nRec := p.logged(t, plugged), p.logged(t, resized), p.logged(t, agentReconciled)
		p.stop()
		p.start(t)
		p.waitLogged(t, agentReconciled, nRec, time.Minute)
		if n, m := p.logged(t, plugged)-nPlug, p.logged(t, resized)-nResize; n != 0 || m != 0 {
			t.Errorf("the restarted agent's reconcile plugged %d and resized %d servers in place: %q", n, m,
				p.logLines(t, "drifted"))
		}
		if md, raw, ok := a.metaData(t, 30); !ok || md["uuid"] != a.id {
			c.metadataState(t, a)
			t.Errorf("md-a after its agent restarted: %v %q", md, raw)
		}
	})

	// A cold migration moves md-s to the other host: the server there
	// reads its own metadata (its port moved with it), and a 2.90 hostname
	// set before the move is the one inside the server it rebuilds and
	// the one the metadata service serves.
	t.Run("after a cold migration", func(t *testing.T) {
		if code, body := rawV(t, cc, "2.90", "PUT", "servers/"+s.id, `{"server": {"hostname": "md-moved"}}`); code != 200 {
			t.Fatalf("2.90 hostname update: %d %v", code, body)
		}
		if code, body := rawV(t, cc, "2.56", "POST", "servers/"+s.id+"/action", `{"migrate": {"host": "`+h0.name+`"}}`); code != 202 {
			t.Fatalf("migrate md-s to %s: %d %v", h0.name, code, body)
		}
		waitStatus(t, cc, s.id, "VERIFY_RESIZE", 5*time.Minute)
		if err := servers.ConfirmResize(ctx, cc, s.id).ExtractErr(); err != nil {
			t.Fatalf("confirm md-s's migration: %v", err)
		}
		waitStatus(t, cc, s.id, "ACTIVE", time.Minute)
		if h := serverHost(t, cc, s.id); h != h0.name {
			t.Fatalf("md-s is on %s after its migration, want %s", h, h0.name)
		}
		moved := s.moved(h0)
		md, raw, ok := moved.metaData(t, 30)
		if !ok || md["uuid"] != s.id || md["name"] != "md-s" {
			c.metadataState(t, moved)
			t.Fatalf("md-s after its migration to %s reads %v %q, want its own metadata", h0.name, md, raw)
		}
		if md["hostname"] != "md-moved" {
			t.Errorf("metadata hostname after the 2.90 update: %v, want md-moved", md["hostname"])
		}
		if out, err := moved.exec("hostname"); err != nil || out != "md-moved" {
			t.Errorf("hostname inside md-s after its migration: %q (%v), want md-moved", out, err)
		}
	})
}
