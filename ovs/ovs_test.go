package ovs_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
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
	// In process (ovsdb-server's socket) and with ovs-vsctl, the same
	// error; ovs-vsctl's is an *ovs.Error with the command and its stderr.
	if err := c.AddAccessPort(ctx, missing, dev, 5, ovs.ExternalIDs{IfaceID: "x"}); err == nil ||
		!strings.Contains(err.Error(), "no bridge named "+missing) {
		t.Errorf("AddAccessPort to a missing bridge: %v", err)
	}
	err := ovs.New(ovs.Options{DBSocket: "-"}).AddAccessPort(ctx, missing, dev, 5, ovs.ExternalIDs{IfaceID: "x"})
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

// logCounter counts log lines by message: "ovs command" is one
// ovs-vsctl/ovs-ofctl process, "ovsdb transact" one in-process write.
type logCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[r.Message]++
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }
func (l *logCounter) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[msg]
}

func listPorts(t *testing.T, c *ovs.Client, br string) []string {
	t.Helper()
	out, err := c.Vsctl(ctxT(t), "list-ports", br)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

// AddAccessPort and DeletePort write over ovsdb-server's socket, in
// process, with ovs-vsctl's --may-exist and --if-exists semantics; an
// unreachable socket falls back to ovs-vsctl.
func TestAccessPortInProcess(t *testing.T) {
	t.Parallel()
	ovstest.Client(t)
	logs := &logCounter{n: map[string]int{}}
	c := ovs.New(ovs.Options{Logger: slog.New(logs)})
	ctx := ctxT(t)
	br, other := ovstest.Bridge(t, c), ovstest.Bridge(t, c)
	dev, _ := veth(t)
	ids := ovs.ExternalIDs{IfaceID: "port-1", AttachedMAC: "fa:16:3e:00:00:01", VMUUID: "vm-1"}
	// noProcess runs f and checks it ran no ovs-vsctl/ovs-ofctl.
	noProcess := func(f func() error) error {
		t.Helper()
		before := logs.count("ovs command")
		err := f()
		if n := logs.count("ovs command") - before; n != 0 {
			t.Errorf("%d ovs processes run by an in-process write", n)
		}
		return err
	}

	if err := noProcess(func() error { return c.AddAccessPort(ctx, br, dev, 101, ids) }); err != nil {
		t.Fatal(err)
	}
	if got := vsctlGet(t, c, "Port", dev, "tag"); got != "101" {
		t.Errorf("tag = %s, want 101", got)
	}
	// Someone makes it a trunk and adds an external id of its own.
	if _, err := c.Vsctl(ctx, "set", "Port", dev, "trunks=5,6", "vlan_mode=trunk", "--", "set", "Interface", dev, "external_ids:other=kept"); err != nil {
		t.Fatal(err)
	}
	// Again with another tag and ids: the same port, updated.
	ids2 := ovs.ExternalIDs{IfaceID: "port-2", AttachedMAC: "fa:16:3e:00:00:02", VMUUID: "vm-2"}
	if err := noProcess(func() error { return c.AddAccessPort(ctx, br, dev, 202, ids2) }); err != nil {
		t.Fatalf("AddAccessPort again: %v", err)
	}
	if got := listPorts(t, c, br); len(got) != 1 || got[0] != dev {
		t.Errorf("list-ports = %v, want [%s]", got, dev)
	}
	for col, want := range map[string]string{"tag": "202", "vlan_mode": "access", "trunks": "[]"} {
		if got := vsctlGet(t, c, "Port", dev, col); got != want {
			t.Errorf("Port %s = %s, want %s", col, got, want)
		}
	}
	for key, want := range map[string]string{"iface-id": "port-2", "attached-mac": "fa:16:3e:00:00:02", "vm-uuid": "vm-2", "iface-status": "active", "other": "kept"} {
		if got := vsctlGet(t, c, "Interface", dev, "external_ids:"+key); got != strconv.Quote(want) && got != want {
			t.Errorf("external_ids:%s = %s, want %s", key, got, want)
		}
	}
	// Unchanged: a no-op.
	if err := c.AddAccessPort(ctx, br, dev, 202, ids2); err != nil {
		t.Fatalf("AddAccessPort unchanged: %v", err)
	}
	// The same name on another bridge is an error, and changes nothing.
	err := c.AddAccessPort(ctx, other, dev, 7, ids)
	if err == nil || !strings.Contains(err.Error(), "is actually attached to bridge "+br) {
		t.Errorf("AddAccessPort on another bridge: %v", err)
	}
	if got := listPorts(t, c, other); len(got) != 0 {
		t.Errorf("list-ports %s = %v, want none", other, got)
	}
	if got := vsctlGet(t, c, "Port", dev, "tag"); got != "202" {
		t.Errorf("tag after the failed add elsewhere = %s, want 202", got)
	}
	// A bridge's own port is not an access port to update.
	if err := c.AddAccessPort(ctx, br, other, 7, ids); err == nil {
		t.Error("AddAccessPort of another bridge's local port succeeded")
	}
	if err := noProcess(func() error { return c.DeletePort(ctx, dev) }); err != nil {
		t.Fatal(err)
	}
	if got := listPorts(t, c, br); len(got) != 0 {
		t.Errorf("list-ports after DeletePort = %v", got)
	}
	if out, err := c.Vsctl(ctx, "--columns=name", "find", "Interface", "name="+dev); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("Interface row left after DeletePort: %q %v", out, err)
	}
	if err := c.DeletePort(ctx, dev); err != nil {
		t.Errorf("deleting a missing port: %v", err)
	}
	// --if-exists del-port leaves a bridge's local port alone.
	if err := c.DeletePort(ctx, br); err != nil {
		t.Errorf("DeletePort of a bridge's local port: %v", err)
	}
	if ok, err := c.BridgeExists(ctx, br); err != nil || !ok {
		t.Errorf("bridge gone after DeletePort of its local port: %v %v", ok, err)
	}
	if logs.count("ovsdb transact") < 5 {
		t.Errorf("%d in-process writes logged, want at least 5", logs.count("ovsdb transact"))
	}

	// Without the socket: ovs-vsctl, one process per write.
	fb := &logCounter{n: map[string]int{}}
	vc := ovs.New(ovs.Options{DBSocket: t.TempDir() + "/none.sock", Logger: slog.New(fb)})
	if err := vc.AddAccessPort(ctx, br, dev, 9, ids); err != nil {
		t.Fatal(err)
	}
	if got := vsctlGet(t, c, "Port", dev, "tag"); got != "9" {
		t.Errorf("tag via ovs-vsctl = %s, want 9", got)
	}
	if err := vc.DeletePort(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if got := listPorts(t, c, br); len(got) != 0 {
		t.Errorf("list-ports after DeletePort via ovs-vsctl = %v", got)
	}
	if fb.count("ovs command") != 2 || fb.count("ovsdb transact") != 0 {
		t.Errorf("fallback logged %d commands, %d transactions; want 2, 0", fb.count("ovs command"), fb.count("ovsdb transact"))
	}
}

// Concurrent adds and deletes on one bridge mutate Bridge.ports, so none
// loses another's port.
func TestAccessPortConcurrent(t *testing.T) {
	t.Parallel()
	c := ovstest.Client(t)
	ctx := ctxT(t)
	br := ovstest.Bridge(t, c)
	const n = 20
	devs := make([]string, n)
	for i := range devs {
		devs[i], _ = veth(t)
	}
	run := func(f func(i int) error) {
		t.Helper()
		errs := make(chan error, n)
		for i := range devs {
			go func() { errs <- f(i) }()
		}
		for range devs {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
	run(func(i int) error {
		return c.AddAccessPort(ctx, br, devs[i], 100+i, ovs.ExternalIDs{IfaceID: "p" + itoa(i), AttachedMAC: "fa:16:3e:00:00:01", VMUUID: "vm"})
	})
	got := listPorts(t, c, br)
	want := append([]string(nil), devs...)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after %d concurrent adds, list-ports = %v, want %v", n, got, want)
	}
	ports, err := c.ListPorts(ctx, br)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if p.OFPort <= 0 || p.VLANMode != "access" || p.Tag < 100 || p.Tag >= 100+n ||
			devs[p.Tag-100] != p.Name || p.IfaceID() != "p"+itoa(p.Tag-100) {
			t.Errorf("port %+v: want an open access port with its own tag and iface-id", p)
		}
	}
	run(func(i int) error { return c.DeletePort(ctx, devs[i]) })
	if got := listPorts(t, c, br); len(got) != 0 {
		t.Fatalf("after %d concurrent deletes, list-ports = %v", n, got)
	}
}

// When AddAccessPort returns, ovs-vswitchd has the port (it waits for
// cur_cfg >= next_cfg, as ovs-vsctl does): the port has its OpenFlow number
// and a flow naming it (in_port=NAME, resolved by ovs-ofctl from
// ovs-vswitchd) goes in at once.
func TestAccessPortFlowRightAfter(t *testing.T) {
	t.Parallel()
	c := ovstest.Client(t)
	ctx := ctxT(t)
	br := ovstest.Bridge(t, c)
	for i := 0; i < 5; i++ {
		dev, _ := veth(t)
		if err := c.AddAccessPort(ctx, br, dev, 10+i, ovs.ExternalIDs{IfaceID: "p" + itoa(i)}); err != nil {
			t.Fatal(err)
		}
		// ovs-vswitchd numbers the port when it applies the change
		// (what the plumbing checks right after, in process).
		if p, ok, err := c.PortByName(ctx, dev); err != nil || !ok || p.OFPort <= 0 {
			t.Errorf("port %s right after AddAccessPort: %+v %v %v; want it open, with an OpenFlow number", dev, p, ok, err)
		}
		if _, err := c.Ofctl(ctx, "", "add-flow", br, "cookie=0x1,priority=10,in_port="+dev+",actions=drop"); err != nil {
			t.Fatalf("flow naming port %s right after AddAccessPort: %v", dev, err)
		}
		if err := c.DeletePort(ctx, dev); err != nil {
			t.Fatal(err)
		}
	}
}
