package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/capsule-cloud/capsule/vif"
)

// tcpTo is true when from opens a TCP connection to ip:port and reads
// to's file (busybox wget, 2 s timeout).
func tcpTo(from, to *netServer, ip string, port int) bool {
	out, err := from.exec("timeout", "2", "wget", "-qO-", fmt.Sprintf("http://%s:%d/f", ip, port))
	return err == nil && strings.TrimSpace(out) == "hello-from-"+to.name
}

// TestSecurityGroupsEnforced: security groups in Open vSwitch with
// conntrack, on two hosts. A is in "web" (TCP 80 from anywhere, ICMP from
// members of "admin"); B (other host) and C (A's host) are in "default".
// B and C reach A on 80 (A's replies flow), not on 8080, and cannot ping
// it until B joins "admin"; a deleted rule refuses the next connection
// within a second with A running on (same PID); a server booted into
// admin pings A once ACTIVE, and once deleted its address leaves A's
// flows (a server of default booted with that address cannot ping A);
// A's filter survives an agent restart and the start-up reconcile
// repairs its deleted flows.
func TestSecurityGroupsEnforced(t *testing.T) {
	t.Parallel()
	c := startCloud(t, twoHosts)
	ctx := context.Background()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	netID, _ := vlanNetwork(t, nc, "sg", 321, "10.79.0.0/24", true)
	h0, h1 := c.hosts[0], c.hosts[1]
	a := activeServer(t, cc, nc, "sg-a", c.bootOn(t, cc, "sg-a", h0, netID, "10.79.0.10"), h0)
	b := activeServer(t, cc, nc, "sg-b", c.bootOn(t, cc, "sg-b", h1, netID, "10.79.0.11"), h1)
	cs := activeServer(t, cc, nc, "sg-c", c.bootOn(t, cc, "sg-c", h0, netID, "10.79.0.12"), h0)

	web, err := groups.Create(ctx, nc, groups.CreateOpts{Name: "web"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	adm, err := groups.Create(ctx, nc, groups.CreateOpts{Name: "admin"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	http80, err := rules.Create(ctx, nc, rules.CreateOpts{SecGroupID: web.ID, Direction: rules.DirIngress, EtherType: rules.EtherType4,
		Protocol: rules.ProtocolTCP, PortRangeMin: 80, PortRangeMax: 80, RemoteIPPrefix: "0.0.0.0/0"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Create(ctx, nc, rules.CreateOpts{SecGroupID: web.ID, Direction: rules.DirIngress, EtherType: rules.EtherType4,
		Protocol: rules.ProtocolICMP, RemoteGroupID: adm.ID}).Extract(); err != nil {
		t.Fatal(err)
	}
	setGroups := func(s *netServer, ids ...string) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := ports.Update(ctx, nc, s.portID, ports.UpdateOpts{SecurityGroups: &ids}).Extract(); err != nil {
			t.Fatalf("put %s in %v: %v", s.name, ids, err)
		}
		return time.Since(start)
	}
	d := setGroups(a, web.ID)
	t.Logf("A joins web: the API answered in %v", d)
	pid := a.pid(t)
	for _, p := range []string{"80", "8080"} {
		if out, err := a.exec("sh", "-c", "mkdir -p /tmp/www && echo hello-from-"+a.name+" > /tmp/www/f && httpd -p "+p+" -h /tmp/www"); err != nil {
			t.Fatalf("httpd on %s in A: %v %s", p, err, out)
		}
	}
	b.serve(t)

	eventually(t, 10*time.Second, "B reaches A on TCP 80", func() bool { return tcpTo(b, a, a.ip, 80) })
	eventually(t, 10*time.Second, "C (same host) reaches A on TCP 80", func() bool { return tcpTo(cs, a, a.ip, 80) })
	if tcpTo(b, a, a.ip, 8080) || tcpTo(cs, a, a.ip, 8080) {
		t.Error("TCP 8080 to A got through: no rule allows it")
	}
	if b.ping(t, a.ip) {
		t.Error("B pings A before joining admin")
	}
	// A is not in default: B's filter does not let A in, though A may
	// send (web's egress rules) and A's replies to B flow (above).
	if tcpTo(a, b, b.ip, 8080) {
		t.Error("A reached B on 8080: B's default group only admits default's members")
	}
	if !tcpTo(b, b, b.ip, 8080) {
		t.Error("B cannot reach itself")
	}

	d = setGroups(b, adm.ID)
	t.Logf("B joins admin: the API answered in %v", d)
	start := time.Now()
	eventually(t, 5*time.Second, "B pings A once in admin", func() bool { return b.ping(t, a.ip) })
	t.Logf("ping B->A worked %v after the API answered", time.Since(start))
	if tcpTo(b, a, a.ip, 8080) {
		t.Error("TCP 8080 to A got through after B joined admin")
	}

	start = time.Now()
	if err := rules.Delete(ctx, nc, http80.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	deleted := time.Since(start)
	if tcpTo(b, a, a.ip, 80) {
		t.Errorf("B opened a new TCP 80 connection to A right after the rule went (the API answered in %v)", deleted)
	}
	t.Logf("rule delete: the API answered in %v and the next connection was refused", deleted)
	if deleted > time.Second {
		t.Errorf("the rule change took %v, want under 1 s", deleted)
	}
	if got := a.pid(t); got != pid {
		t.Errorf("A's PID 1 changed from %d to %d: the rule change restarted it", pid, got)
	}
	if !b.ping(t, a.ip) {
		t.Error("B's ping to A stopped with an unrelated rule's delete")
	}
	if _, err := rules.Create(ctx, nc, rules.CreateOpts{SecGroupID: web.ID, Direction: rules.DirIngress, EtherType: rules.EtherType4,
		Protocol: rules.ProtocolTCP, PortRangeMin: 80, PortRangeMax: 80}).Extract(); err != nil {
		t.Fatal(err)
	}
	if !tcpTo(b, a, a.ip, 80) {
		t.Error("TCP 80 rule back: B cannot reach A")
	}

	// Remote groups follow their members: a server booted into admin (on
	// the other host) pings A with no other step; once it is deleted its
	// address leaves A's flows.
	img := c.imageIDs(t, "admin", c.adminPass, "admin")["busybox"]
	dsrv, err := servers.Create(ctx, cc, servers.CreateOpts{Name: "sg-d", ImageRef: img, FlavorRef: "1",
		AvailabilityZone: "nova:" + h1.name, SecurityGroups: []string{"admin"},
		Networks: []servers.Network{{UUID: netID, FixedIP: "10.79.0.13"}}}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	dd := activeServer(t, cc, nc, "sg-d", dsrv.ID, h1)
	start = time.Now()
	eventually(t, 10*time.Second, "a new member of admin pings A", func() bool { return dd.ping(t, a.ip) })
	t.Logf("the new member pinged A %v after it was ACTIVE", time.Since(start))
	aFlows := func() string {
		out, _ := exec.Command("ovs-ofctl", "-O", "OpenFlow14", "dump-flows", h0.bridge,
			fmt.Sprintf("table=%d,cookie=%#x/-1", vif.TableIngress, vif.Cookie(a.portID))).CombinedOutput()
		return string(out)
	}
	if !strings.Contains(aFlows(), "nw_src=10.79.0.13") {
		t.Errorf("A's ingress flows lack the new admin member:\n%s", aFlows())
	}
	if err := servers.Delete(ctx, cc, dd.id).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, cc, dd.id, 60*time.Second)
	eventually(t, 10*time.Second, "the deleted member's address leaves A's flows", func() bool {
		return !strings.Contains(aFlows(), "nw_src=10.79.0.13")
	})
	// Its address is no longer admitted: a server of default (not admin)
	// booted with it reaches C (default admits its new member) but
	// cannot ping A.
	es := activeServer(t, cc, nc, "sg-e", c.bootOn(t, cc, "sg-e", h1, netID, "10.79.0.13"), h1)
	eventually(t, 10*time.Second, "a new member of default pings C", func() bool { return es.ping(t, cs.ip) })
	if es.ping(t, a.ip) {
		t.Error("the deleted admin member's address still pings A (from a server not in admin)")
	}

	// Drift: A's ingress flows go; the agent's start-up reconcile puts
	// them back, and the filter holds across the restart.
	cookie := vif.Cookie(a.portID)
	if out, err := exec.Command("ovs-ofctl", "-O", "OpenFlow14", "del-flows", h0.bridge,
		fmt.Sprintf("table=%d,cookie=%#x/-1", vif.TableIngress, cookie)).CombinedOutput(); err != nil {
		t.Fatalf("delete A's ingress flows: %v %s", err, out)
	}
	agent := c.proc(t, "agent-"+h0.name)
	agent.stop()
	n := agent.logged(t, agentReconciled)
	agent.start(t)
	agent.waitLogged(t, agentReconciled, n, 60*time.Second)
	out, err := exec.Command("ovs-ofctl", "-O", "OpenFlow14", "dump-flows", h0.bridge,
		fmt.Sprintf("table=%d,cookie=%#x/-1", vif.TableIngress, cookie)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "tp_dst=80") {
		t.Errorf("A's ingress flows after the agent's restart: %v %s", err, out)
	}
	eventually(t, 10*time.Second, "B reaches A on TCP 80 after the agent restart", func() bool { return tcpTo(b, a, a.ip, 80) })
	if tcpTo(b, a, a.ip, 8080) {
		t.Error("TCP 8080 to A got through after the agent restart")
	}
	if got := a.pid(t); got != pid {
		t.Errorf("A's PID 1 changed from %d to %d across the agent restart", pid, got)
	}
}

// TestSecurityGroupCLI: what the openstack CLI sends for security groups
// works: group and rule create/list/delete, server create
// --security-group, server add/remove security group (and the server
// shows its groups), the default group cannot be deleted by a member.
func TestSecurityGroupCLI(t *testing.T) {
	t.Parallel()
	c := startCloud(t, withBridge)
	o := c.openstack(t, "demo", c.demoPass, "demo")
	var web, adm, rule map[string]any
	o.json(&web, "security", "group", "create", "--description", "web servers", "web")
	o.json(&adm, "security", "group", "create", "admin")
	o.json(&rule, "security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "80", "web")
	if rule["port_range_min"] != float64(80) || rule["protocol"] != "tcp" || rule["direction"] != "ingress" {
		t.Fatalf("rule %v", rule)
	}
	o.run("security", "group", "rule", "create", "--protocol", "icmp", "--remote-group", "admin", "web")
	if out, err := o.try("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "80", "web"); err == nil {
		t.Fatalf("a duplicate rule was created: %s", out)
	}
	var groups []map[string]any
	o.json(&groups, "security", "group", "list")
	names := map[string]bool{}
	for _, g := range groups {
		names[fmt.Sprint(g["Name"])] = true
	}
	if !names["web"] || !names["admin"] || !names["default"] {
		t.Fatalf("security group list %v", groups)
	}
	var rl []map[string]any
	o.json(&rl, "security", "group", "rule", "list", "web")
	if len(rl) != 4 {
		t.Fatalf("rules of web %v, want 2 egress + 2 ingress", rl)
	}

	o.run("network", "create", "sgnet")
	o.run("subnet", "create", "--network", "sgnet", "--subnet-range", "10.80.0.0/24", "sgsub")
	var srv map[string]any
	o.json(&srv, "server", "create", "--image", "busybox", "--flavor", "1", "--network", "sgnet", "--security-group", "web", "--wait", "sg-cli")
	groupsOf := func() string {
		var s map[string]any
		o.json(&s, "server", "show", "sg-cli")
		return fmt.Sprint(s["security_groups"])
	}
	if g := groupsOf(); !strings.Contains(g, "web") || strings.Contains(g, "default") {
		t.Fatalf("server's groups %s, want web only", g)
	}
	o.run("server", "add", "security", "group", "sg-cli", "admin")
	if g := groupsOf(); !strings.Contains(g, "web") || !strings.Contains(g, "admin") {
		t.Fatalf("after add: %s", g)
	}
	o.run("server", "remove", "security", "group", "sg-cli", "web")
	if g := groupsOf(); strings.Contains(g, "web") || !strings.Contains(g, "admin") {
		t.Fatalf("after remove: %s", g)
	}
	if out, err := o.try("security", "group", "delete", "admin"); err == nil {
		t.Fatalf("deleted a group a server is in: %s", out)
	}
	o.run("security", "group", "rule", "delete", fmt.Sprint(rule["id"]))
	o.run("security", "group", "delete", "web")
	if out, err := o.try("security", "group", "delete", "default"); err == nil {
		t.Fatalf("a member deleted its default group: %s", out)
	}
	o.run("server", "delete", "--wait", "sg-cli")
	o.run("security", "group", "delete", "admin")
}
