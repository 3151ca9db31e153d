package agent

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/ovs/ovstest"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/vif"
)

// TestAgentWithDockerAndOVS runs the whole host side for real: the agent
// builds servers on dockerd with their NICs plugged by vif into an Open
// vSwitch bridge, and the servers talk TCP on their VLAN, not across
// VLANs; the address survives a reboot, stop/start re-plugs, reconcile
// repairs a port removed behind its back and removes ports of servers not
// on the host, and delete leaves no port.
func TestAgentWithDockerAndOVS(t *testing.T) {
	image := testenv.Image(t)
	host := testenv.DockerHost(t)
	c := ovstest.Client(t)
	br := ovstest.Bridge(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	drv, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, Logger: testLogger(t), SandboxImage: image, NetworkMode: testenv.NetworkMode()})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { drv.Close() })
	plumber := vif.New(c, map[string]string{"physnet-t": br}, testLogger(t))
	cfg := testConfig()
	cfg.StopTimeout = 5 * time.Second
	e := newEnv(t, drv, cfg, WithPlumber(VIF(plumber)))
	e.serveConductor()
	e.start()

	sn := randSubnet(t)
	type server struct {
		id, ip string
		spec   protocol.InstanceSpec
	}
	mk := func(last, vlan int) server {
		id := "agtest-" + uuid.NewString()
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = drv.Destroy(cctx, id)
			_ = VIF(plumber).UnplugInstance(cctx, id)
		})
		ip := fmt.Sprintf("%s%d", sn, last)
		spec := netSpec(id)
		spec.ImageRef = image
		spec.NICs = []protocol.NIC{{PortID: uuid.NewString(), NetworkID: "net-t", MAC: randMAC(t), MTU: 1450,
			IPs: []protocol.IP{{Address: ip, PrefixLen: 24, SubnetID: "sub-t"}}, Gateway: sn + "1", DNS: []string{sn + "2"},
			PhysicalNetwork: "physnet-t", NetworkType: "vlan", SegmentationID: vlan, PortSecurity: true}}
		return server{id: id, ip: ip, spec: spec}
	}
	a, b, other := mk(10, 101), mk(11, 101), mk(12, 102)
	for _, s := range []server{a, b, other} {
		e.publish(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: "req-" + s.id, Attempt: 1, Spec: s.spec})
	}
	for _, s := range []server{a, b, other} {
		if r := e.waitReport(s.id, 1, 2*time.Minute); !r.OK {
			t.Fatalf("build %s: %+v", s.id, r)
		}
	}

	sh := func(s server, script string) (int, string) {
		t.Helper()
		code, out, err := execInContainer(ctx, drv, docker.ContainerName(s.id), "sh", "-c", script)
		if err != nil {
			t.Fatalf("exec in %s: %v", s.id, err)
		}
		return code, out
	}
	serve := func(s server) {
		t.Helper()
		if code, out := sh(s, "mkdir -p /tmp/www && echo hello-from-"+s.ip+" > /tmp/www/id && httpd -p 8080 -h /tmp/www"); code != 0 {
			t.Fatalf("httpd in %s: %d %s", s.id, code, out)
		}
	}
	reach := func(from, to server) error {
		t.Helper()
		code, out := sh(from, "timeout 5 wget -q -O - http://"+to.ip+":8080/id")
		if code != 0 || strings.TrimSpace(out) != "hello-from-"+to.ip {
			return fmt.Errorf("TCP %s -> %s: exit %d, %q", from.ip, to.ip, code, out)
		}
		return nil
	}
	mustReach := func(from, to server, when string) {
		t.Helper()
		// The first packets may wait on ARP; give it a few tries. (No
		// wget -T: busybox 1.35's wget segfaults with it.)
		var err error
		for range 3 {
			if err = reach(from, to); err == nil {
				return
			}
		}
		_, diag := sh(from, "ip -o addr; ip route; cat /proc/net/arp; nc -w 2 "+to.ip+" 8080 </dev/null; echo nc=$?")
		flows, _ := c.Ofctl(ctx, "", "dump-flows", br)
		show, _ := c.Vsctl(ctx, "show")
		t.Errorf("%s: %v\nin %s:\n%s\nflows:\n%s\novs:\n%s", when, err, from.ip, diag, flows, show)
	}
	portsOf := func(id string) []ovs.Port {
		t.Helper()
		ports, err := c.ListPorts(ctx, br)
		if err != nil {
			t.Fatal(err)
		}
		var out []ovs.Port
		for _, p := range ports {
			if p.VMUUID() == id {
				out = append(out, p)
			}
		}
		return out
	}

	// The workload sees its NIC as eth0 with its address, from its
	// first instruction on.
	if code, out := sh(a, "ip -4 -o addr show dev eth0; ip route"); code != 0 || !strings.Contains(out, a.ip+"/24") || !strings.Contains(out, "default via "+sn+"1") {
		t.Errorf("network inside %s: %d %s", a.id, code, out)
	}
	if ps := portsOf(a.id); len(ps) != 1 || ps[0].Tag != 101 {
		t.Errorf("OVS ports of %s = %+v, want one with tag 101", a.id, ps)
	}

	serve(a)
	serve(b)
	serve(other)
	mustReach(a, b, "same VLAN")
	mustReach(b, a, "same VLAN, back")
	if err := reach(other, b); err == nil {
		t.Errorf("a server on VLAN 102 reached one on VLAN 101")
	}

	// Reboot keeps the address.
	e.action(b.id, "req-rb", lifecycle.ActReboot)
	if r := e.waitReport(b.id, 2, time.Minute); !r.OK {
		t.Fatalf("reboot: %+v", r)
	}
	serve(b)
	mustReach(a, b, "after reboot")

	// Stop unplugs; start plugs the new namespace before the workload.
	e.action(a.id, "req-st", lifecycle.ActStop)
	if r := e.waitReport(a.id, 2, time.Minute); !r.OK {
		t.Fatalf("stop: %+v", r)
	}
	if ps := portsOf(a.id); len(ps) != 0 {
		t.Errorf("a stopped server keeps OVS ports: %+v", ps)
	}
	e.action(a.id, "req-sa", lifecycle.ActStart)
	if r := e.waitReport(a.id, 3, time.Minute); !r.OK {
		t.Fatalf("start: %+v", r)
	}
	mustReach(a, b, "after stop/start")

	// Drift: a port removed behind the agent's back, and a port of a
	// server that is not on this host.
	if err := c.DeletePort(ctx, vif.HostIfName(b.spec.NICs[0].PortID)); err != nil {
		t.Fatal(err)
	}
	ghost := "ghost-" + uuid.NewString()
	ghostPort := uuid.NewString()
	if err := c.AddAccessPort(ctx, br, vif.HostIfName(ghostPort), 101, ovs.ExternalIDs{IfaceID: ghostPort, AttachedMAC: randMAC(t), VMUUID: ghost}); err != nil {
		t.Fatal(err)
	}
	var expected []protocol.ExpectedInstance
	for _, s := range []server{a, b, other} {
		expected = append(expected, protocol.ExpectedInstance{Spec: s.spec, VMState: lifecycle.Active})
	}
	e.cond.setExpected(expected...)
	if err := e.agent.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if ps := portsOf(b.id); len(ps) != 1 || ps[0].Tag != 101 {
		t.Errorf("reconcile did not restore the port of %s: %+v", b.id, ps)
	}
	if ps := portsOf(ghost); len(ps) != 0 {
		t.Errorf("reconcile left the port of a server not on this host: %+v", ps)
	}
	mustReach(a, b, "after drift repair")

	// Delete leaves nothing.
	for i, s := range []server{a, b, other} {
		n := map[int]int{0: 4, 1: 3, 2: 2}[i]
		e.action(s.id, "req-del", lifecycle.ActDelete)
		if r := e.waitReport(s.id, n, time.Minute); !r.OK || r.Action != lifecycle.ActDelete {
			t.Fatalf("delete %s: %+v", s.id, r)
		}
		if ps := portsOf(s.id); len(ps) != 0 {
			t.Errorf("ports of deleted %s left: %+v", s.id, ps)
		}
	}
}

func randSubnet(t *testing.T) string {
	t.Helper()
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("10.%d.%d.", 100+int(b[0])%100, b[1])
}

func randMAC(t *testing.T) string {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", b[0], b[1], b[2])
}
