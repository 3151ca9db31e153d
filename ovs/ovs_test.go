package ovs_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/ovs/ovstest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// veth creates a veth pair in the host namespace, removed when the test ends.
func veth(t *testing.T) (string, string) {
	t.Helper()
	a, b := ovstest.Name("tpt"), ovstest.Name("tpp")
	if out, err := exec.Command("ip", "link", "add", a, "type", "veth", "peer", "name", b).CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", a).Run() })
	return a, b
}

func vsctlGet(t *testing.T, c *ovs.Client, args ...string) string {
	t.Helper()
	out, err := c.Vsctl(ctxT(t), append([]string{"get"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func TestBridgeRoundTrip(t *testing.T) {
	t.Parallel()
	c := ovstest.Client(t)
	ctx := ctxT(t)
	br := ovstest.Bridge(t, c)

	if ok, err := c.BridgeExists(ctx, br); err != nil || !ok {
		t.Fatalf("BridgeExists = %v, %v; want true", ok, err)
	}
	if err := c.EnsureBridge(ctx, br); err != nil {
		t.Fatalf("EnsureBridge is not idempotent: %v", err)
	}
	if got := vsctlGet(t, c, "Bridge", br, "datapath_type"); got != "netdev" {
		t.Errorf("datapath_type = %s, want netdev", got)
	}
	if got := vsctlGet(t, c, "Bridge", br, "fail_mode"); got != "secure" {
		t.Errorf("fail_mode = %s, want secure", got)
	}
	flows, err := c.DumpFlows(ctx, br, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != 1 || flows[0].Cookie != ovs.BaseCookie || flows[0].Priority != 0 || flows[0].Actions != "NORMAL" {
		t.Fatalf("flows after EnsureBridge = %v, want only the NORMAL fallback", flows)
	}

	// The fallback comes back after someone deletes every flow.
	if _, err := c.Ofctl(ctx, "", "del-flows", br); err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureFallbackFlow(ctx, br); err != nil {
		t.Fatal(err)
	}
	if flows, err := c.DumpFlows(ctx, br, ovs.CookieMatch(ovs.BaseCookie)); err != nil || len(flows) != 1 {
		t.Fatalf("fallback flow after repair: %v, %v", flows, err)
	}

	if err := c.DeleteBridge(ctx, br); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.BridgeExists(ctx, br); err != nil || ok {
		t.Fatalf("BridgeExists after delete = %v, %v; want false", ok, err)
	}
	if err := c.DeleteBridge(ctx, br); err != nil {
		t.Fatalf("deleting a missing bridge: %v", err)
	}
}

func TestAccessPortRoundTrip(t *testing.T) {
	t.Parallel()
	c := ovstest.Client(t)
	ctx := ctxT(t)
	br := ovstest.Bridge(t, c)
	dev, _ := veth(t)
	ids := ovs.ExternalIDs{IfaceID: "port-1", AttachedMAC: "fa:16:3e:00:00:01", VMUUID: "vm-1"}

	if err := c.AddAccessPort(ctx, br, dev, 101, ids); err != nil {
		t.Fatal(err)
	}
	ports, err := c.ListPorts(ctx, br)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 1 {
		t.Fatalf("ports = %+v, want one", ports)
	}
	p := ports[0]
	if p.Name != dev || p.Bridge != br || p.Tag != 101 || p.VLANMode != "access" || p.OFPort <= 0 || p.Error != "" {
		t.Errorf("port = %+v, want %s on %s tag 101 access with an ofport", p, dev, br)
	}
	want := map[string]string{"iface-id": "port-1", "attached-mac": "fa:16:3e:00:00:01", "vm-uuid": "vm-1", "iface-status": "active"}
	for k, v := range want {
		if p.ExternalIDs[k] != v {
			t.Errorf("external_ids[%s] = %q, want %q (all: %v)", k, p.ExternalIDs[k], v, p.ExternalIDs)
		}
	}

	// Again, now flat: the tag goes, the port stays an access port.
	if err := c.AddAccessPort(ctx, br, dev, 0, ids); err != nil {
		t.Fatalf("AddAccessPort again: %v", err)
	}
	p2, ok, err := c.PortByIfaceID(ctx, "port-1")
	if err != nil || !ok {
		t.Fatalf("PortByIfaceID = %v, %v", ok, err)
	}
	if p2.Tag != 0 || p2.VLANMode != "access" || p2.OFPort != p.OFPort {
		t.Errorf("after re-add untagged: %+v", p2)
	}
	if got := vsctlGet(t, c, "Port", dev, "tag"); got != "[]" {
		t.Errorf("tag column = %s, want []", got)
	}

	// Replace keeps the result but rebuilds the port.
	if err := c.ReplaceAccessPort(ctx, br, dev, 7, ids); err != nil {
		t.Fatal(err)
	}
	if p3, ok, err := c.PortByName(ctx, dev); err != nil || !ok || p3.Tag != 7 || p3.IfaceID() != "port-1" || p3.VMUUID() != "vm-1" {
		t.Errorf("after replace: %+v %v %v", p3, ok, err)
	}

	if err := c.DeletePort(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.PortByName(ctx, dev); err != nil || ok {
		t.Fatalf("port still there after DeletePort: %v %v", ok, err)
	}
	if err := c.DeletePort(ctx, dev); err != nil {
		t.Fatalf("deleting a missing port: %v", err)
	}
	if _, ok, err := c.PortByIfaceID(ctx, "port-1"); err != nil || ok {
		t.Fatalf("PortByIfaceID after delete: %v %v", ok, err)
	}
}

func TestAccessPortErrors(t *testing.T) {
	t.Parallel()
	c := ovstest.Client(t)
	ctx := ctxT(t)
	dev, _ := veth(t)

	if err := c.AddAccessPort(ctx, br0(t, c), dev, 4095, ovs.ExternalIDs{}); err == nil {
		t.Error("tag 4095 accepted")
	}
	missing := ovstest.Name("brt-none")
	err := c.AddAccessPort(ctx, missing, dev, 5, ovs.ExternalIDs{IfaceID: "x"})
	var oe *ovs.Error
	if !errors.As(err, &oe) {
		t.Fatalf("error %v is not an *ovs.Error", err)
	}
	if !strings.Contains(err.Error(), "ovs-vsctl") || !strings.Contains(oe.Stderr, "no bridge named "+missing) {
		t.Errorf("error lacks the command or its stderr: %v", err)
	}
	if _, err := c.ListPorts(ctx, missing); err == nil {
		t.Error("ListPorts of a missing bridge succeeded")
	}
}

func br0(t *testing.T, c *ovs.Client) string { return ovstest.Bridge(t, c) }

func TestFlows(t *testing.T) {
	t.Parallel()
	c := ovstest.Client(t)
	ctx := ctxT(t)
	br := ovstest.Bridge(t, c)
	dev, _ := veth(t)
	if err := c.AddAccessPort(ctx, br, dev, 0, ovs.ExternalIDs{}); err != nil {
		t.Fatal(err)
	}
	p, _, err := c.PortByName(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	const cookie = ovs.CookiePrefix | 0x1234
	in := "in_port=" + itoa(p.OFPort)
	flows := []string{
		"cookie=0xca5e000000001234,priority=100," + in + ",dl_src=fa:16:3e:00:00:01,actions=NORMAL",
		"cookie=0xca5e000000001234,priority=90," + in + ",actions=drop",
	}
	if err := c.AddFlows(ctx, br, flows); err != nil {
		t.Fatal(err)
	}
	got, err := c.DumpFlows(ctx, br, ovs.CookieMatch(cookie))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Cookie != cookie {
		t.Fatalf("dumped %v, want the 2 flows", got)
	}
	for _, f := range got {
		if f.Priority == 90 && (f.Actions != "drop" || f.Match != in) {
			t.Errorf("drop flow parsed as %+v", f)
		}
	}

	// Replace swaps the set atomically.
	if err := c.ReplaceFlows(ctx, br, cookie, flows[1:]); err != nil {
		t.Fatal(err)
	}
	if got, err := c.DumpFlows(ctx, br, ovs.CookieMatch(cookie)); err != nil || len(got) != 1 || got[0].Priority != 90 {
		t.Fatalf("after replace: %v %v", got, err)
	}

	// A bad flow fails the whole bundle, with ovs-ofctl's complaint.
	err = c.AddFlows(ctx, br, []string{"cookie=0xca5e000000001234,priority=5,actions=NORMAL", "priority=6,nonsense_field=1,actions=drop"})
	if err == nil || !strings.Contains(err.Error(), "nonsense_field") {
		t.Fatalf("bad flow: err = %v", err)
	}
	if got, _ := c.DumpFlows(ctx, br, ovs.CookieMatch(cookie)); len(got) != 1 {
		t.Fatalf("failed bundle left flows behind: %v", got)
	}

	if err := c.DeleteFlows(ctx, br, ""); err == nil {
		t.Error("DeleteFlows with an empty match was not refused")
	}
	if err := c.DeleteFlows(ctx, br, ovs.CookieMatch(cookie)); err != nil {
		t.Fatal(err)
	}
	all, err := c.DumpFlows(ctx, br, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Cookie != ovs.BaseCookie {
		t.Fatalf("after delete: %v, want only the fallback", all)
	}
}

func TestTrunkAndPatch(t *testing.T) {
	t.Parallel()
	c := ovstest.Client(t)
	ctx := ctxT(t)
	a, b := ovstest.Bridge(t, c), ovstest.Bridge(t, c)
	pa, pb := ovstest.Name("pt-"), ovstest.Name("pt-")
	for i := 0; i < 2; i++ { // idempotent
		if err := c.AddPatchPair(ctx, a, pa, b, pb); err != nil {
			t.Fatal(err)
		}
	}
	if got := vsctlGet(t, c, "Interface", pa, "options:peer"); strings.Trim(got, `"`) != pb {
		t.Errorf("peer of %s = %s", pa, got)
	}
	pbPort, ok, err := c.PortByName(ctx, pb)
	if err != nil || !ok || pbPort.Bridge != b || pbPort.Tag != 0 {
		t.Errorf("patch port %s: %+v %v %v", pb, pbPort, ok, err)
	}

	dev, _ := veth(t)
	if err := c.AddTrunkPort(ctx, a, dev, 101, 102); err != nil {
		t.Fatal(err)
	}
	if got := vsctlGet(t, c, "Port", dev, "trunks"); got != "[101, 102]" {
		t.Errorf("trunks = %s", got)
	}
	if err := c.AddTrunkPort(ctx, a, dev); err != nil {
		t.Fatal(err)
	}
	if got := vsctlGet(t, c, "Port", dev, "trunks"); got != "[]" {
		t.Errorf("trunks after all-VLAN trunk = %s", got)
	}
	if got := vsctlGet(t, c, "Port", dev, "vlan_mode"); got != "trunk" {
		t.Errorf("vlan_mode = %s", got)
	}
	ports, err := c.ListPorts(ctx, a)
	if err != nil || len(ports) != 2 {
		t.Fatalf("ports of %s: %+v %v", a, ports, err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// Ports reads ovsdb-server's socket in process; what it returns must be
// what ovs-vsctl lists.
func TestPortsFromSocketMatchVsctl(t *testing.T) {
	t.Parallel()
	c := ovstest.Client(t)
	ctx := ctxT(t)
	br := ovstest.Bridge(t, c)
	a, _ := veth(t)
	if err := c.AddAccessPort(ctx, br, a, 42, ovs.ExternalIDs{IfaceID: "port-1", AttachedMAC: "fa:16:3e:00:00:01", VMUUID: "vm-1"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.DeletePort(context.Background(), a) })
	viaVsctl := ovs.New(ovs.Options{DBSocket: "-"})
	viaNothing := ovs.New(ovs.Options{DBSocket: t.TempDir() + "/none.sock"}) // falls back to ovs-vsctl
	ours := func(c *ovs.Client) ([]ovs.Port, map[string]bool) {
		t.Helper()
		all, bridges, err := c.Ports(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []ovs.Port
		for _, p := range all {
			if p.Bridge == br {
				out = append(out, p)
			}
		}
		return out, bridges
	}
	got, gotBridges := ours(c)
	for _, other := range []*ovs.Client{viaVsctl, viaNothing} {
		want, wantBridges := ours(other)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Ports via the socket = %+v, via ovs-vsctl = %+v", got, want)
		}
		if !gotBridges[br] || !wantBridges[br] {
			t.Errorf("bridge %s missing: socket %v, ovs-vsctl %v", br, gotBridges, wantBridges)
		}
	}
	if len(got) != 1 || got[0].Name != a || got[0].Tag != 42 || got[0].VLANMode != "access" || got[0].OFPort <= 0 ||
		got[0].IfaceID() != "port-1" || got[0].VMUUID() != "vm-1" {
		t.Errorf("port = %+v", got)
	}
}

// One ApplyFlows makes a batch's changes in order: adds, a replace of one
// cookie's flows and a delete, leaving other cookies alone.
func TestApplyFlowsBatch(t *testing.T) {
	t.Parallel()
	c := ovstest.Client(t)
	ctx := ctxT(t)
	br := ovstest.Bridge(t, c)
	const keep, repl, gone = ovs.CookiePrefix | 1, ovs.CookiePrefix | 2, ovs.CookiePrefix | 3
	flow := func(cookie uint64, port int) string {
		return fmt.Sprintf("cookie=%#x,priority=100,in_port=%d,actions=drop", cookie, port)
	}
	if err := c.AddFlows(ctx, br, []string{flow(keep, 1), flow(repl, 2), flow(repl, 3), flow(gone, 4)}); err != nil {
		t.Fatal(err)
	}
	var b ovs.FlowBatch
	b.Add(ovs.FallbackFlow())
	b.Replace(repl, flow(repl, 5))
	b.DeleteCookie(gone)
	if err := c.ApplyFlows(ctx, br, &b); err != nil {
		t.Fatal(err)
	}
	count := func(cookie uint64) []ovs.Flow {
		fl, err := c.DumpFlows(ctx, br, ovs.CookieMatch(cookie))
		if err != nil {
			t.Fatal(err)
		}
		return fl
	}
	if fl := count(keep); len(fl) != 1 {
		t.Errorf("flows of the cookie not in the batch = %v", fl)
	}
	if fl := count(repl); len(fl) != 1 || !strings.Contains(fl[0].Match, "in_port=5") {
		t.Errorf("replaced flows = %v, want only in_port=5", fl)
	}
	if fl := count(gone); len(fl) != 0 {
		t.Errorf("deleted flows = %v", fl)
	}
	if fl := count(ovs.BaseCookie); len(fl) != 1 {
		t.Errorf("fallback flows = %v", fl)
	}
	// A bad flow fails the whole batch: nothing of it is applied.
	var bad ovs.FlowBatch
	bad.DeleteCookie(keep)
	bad.Add("priority=1,actions=drop\nadd priority=2,actions=NORMAL")
	if err := c.ApplyFlows(ctx, br, &bad); err == nil {
		t.Error("a batch with a multi-line flow was applied")
	}
	bad = ovs.FlowBatch{}
	bad.DeleteCookie(keep)
	bad.Add("cookie=0x1,priority=1,no_such_field=1,actions=drop")
	if err := c.ApplyFlows(ctx, br, &bad); err == nil {
		t.Error("a batch with a flow OVS refuses was applied")
	}
	if fl := count(keep); len(fl) != 1 {
		t.Errorf("a failed batch changed flows: %v", fl)
	}
}
