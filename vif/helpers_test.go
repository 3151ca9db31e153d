package vif

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/ovs/ovstest"
	"github.com/capsule-cloud/capsule/protocol"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netnsT is a network namespace the test created: a stand-in for a
// server's sandbox.
type netnsT struct {
	name, path string
}

func newNetns(t *testing.T) netnsT {
	t.Helper()
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	n := netnsT{name: "capsule-t-" + hex.EncodeToString(b[:])}
	n.path = "/var/run/netns/" + n.name
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("cleanup netns %s: %v: %s", n.name, err, out)
		}
	})
	return n
}

func (n netnsT) handle(t *testing.T) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromPath(n.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// ip runs "ip" inside the namespace.
func (n netnsT) ip(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"-n", n.name}, args...)...)
}

// ping sends one ICMP echo from the namespace.
func (n netnsT) ping(ip string) error {
	out, err := exec.Command("ip", "netns", "exec", n.name, "busybox", "ping", "-c", "1", "-W", "2", ip).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s", ip, n.name, err, out)
	}
	return nil
}

// listenIn starts a TCP listener in namespace ns on ip (any port).
func listenIn(t *testing.T, ns netnsT, ip string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := inNamespace(ns.handle(t), func() error {
		var err error
		l, err = net.Listen("tcp", net.JoinHostPort(ip, "0"))
		return err
	}); err != nil {
		t.Fatalf("listen in %s on %s: %v", ns.name, ip, err)
	}
	return l
}

// tcp opens a TCP connection from namespace n to a listener started in
// namespace to on ip, and checks a greeting crosses it.
func (n netnsT) tcp(t *testing.T, to netnsT, ip string) error {
	t.Helper()
	l := listenIn(t, to, ip)
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte("hello from " + to.name + "\n"))
	}()
	var c net.Conn
	if err := inNamespace(n.handle(t), func() error {
		var err error
		c, err = net.DialTimeout("tcp", l.Addr().String(), 2*time.Second)
		return err
	}); err != nil {
		return fmt.Errorf("tcp %s -> %s: %w", n.name, l.Addr(), err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("tcp %s -> %s: read: %w", n.name, l.Addr(), err)
	}
	if want := "hello from " + to.name + "\n"; string(b) != want {
		return fmt.Errorf("tcp %s -> %s: got %q, want %q", n.name, l.Addr(), b, want)
	}
	return nil
}

// mustReach checks TCP and ICMP get from "from" to "to" at ip, each
// retried for a few seconds: OVS's userspace datapath picks a device that a
// repair re-created up on a later poll, later still on a machine busy
// with other packages' tests.
func mustReach(t *testing.T, from, to netnsT, ip string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, try := range []struct {
		what  string
		reach func() error
	}{
		{"TCP", func() error { return from.tcp(t, to, ip) }},
		{"ICMP", func() error { return from.ping(ip) }},
	} {
		err := try.reach()
		for err != nil && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			err = try.reach()
		}
		if err != nil {
			t.Errorf("%s: %v", try.what, err)
		}
	}
}

// mustNotReach checks that neither TCP nor ICMP gets from from to ip.
// A change made under OVS (a port's tag, a deleted flow) reaches the
// userspace datapath when its revalidator threads next run, which on a
// loaded machine can be a second or more after the command returned:
// until then the cached datapath flows still forward. So the check waits
// up to 10 s for both TCP and ICMP to fail, and fails if either still
// works then.
func mustNotReach(t *testing.T, from, to netnsT, ip string) {
	t.Helper()
	var tcpErr, pingErr error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		tcpErr, pingErr = from.tcp(t, to, ip), from.ping(ip)
		if (tcpErr != nil && pingErr != nil) || time.Now().After(deadline) {
			break
		}
	}
	if tcpErr == nil {
		t.Errorf("TCP from %s to %s (%s) works; it must not", from.name, to.name, ip)
	}
	if pingErr == nil {
		t.Errorf("ICMP from %s to %s works; it must not", from.name, ip)
	}
}

// subnet returns a random 10.x.y prefix ("10.x.y.") for one test.
func subnet(t *testing.T) string {
	t.Helper()
	x, err := rand.Int(rand.Reader, big.NewInt(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	v := x.Int64()
	return fmt.Sprintf("10.%d.%d.", v>>8, v&0xff)
}

func randMAC(t *testing.T) string {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", b[0], b[1], b[2])
}

// vlanNIC is a NIC on physnet1 with one address in prefix (a "10.x.y."
// string) and the .1 gateway.
func vlanNIC(t *testing.T, prefix string, host, vlan int, portSecurity bool) protocol.NIC {
	nic := protocol.NIC{
		PortID:          uuid.NewString(),
		NetworkID:       uuid.NewString(),
		MAC:             randMAC(t),
		IPs:             []protocol.IP{{Address: fmt.Sprintf("%s%d", prefix, host), PrefixLen: 24}},
		Gateway:         prefix + "1",
		MTU:             1450,
		PhysicalNetwork: "physnet1",
		NetworkType:     "vlan",
		SegmentationID:  vlan,
		PortSecurity:    portSecurity,
	}
	if vlan == 0 {
		nic.NetworkType = "flat"
	}
	return nic
}

// setup gives a test OVS, a bridge mapped as physnet1 and a Plumber.
func setup(t *testing.T) (*ovs.Client, string, *Plumber) {
	t.Helper()
	c := ovstest.Client(t)
	br := ovstest.Bridge(t, c)
	return c, br, New(c, map[string]string{"physnet1": br}, testLogger(t))
}

// plug plugs nics of a new instance into a new namespace, and unplugs them
// when the test ends.
func plug(t *testing.T, p *Plumber, nics ...protocol.NIC) (string, netnsT) {
	t.Helper()
	n := newNetns(t)
	id := uuid.NewString()
	t.Cleanup(func() {
		if err := p.Unplug(context.Background(), id, nics); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := p.Plug(testCtx(t), id, n.path, nics); err != nil {
		t.Fatalf("Plug: %v", err)
	}
	return id, n
}

func hostLinkExists(t *testing.T, name string) bool {
	t.Helper()
	_, err := netlink.LinkByName(name)
	if err == nil {
		return true
	}
	if _, ok := err.(netlink.LinkNotFoundError); ok {
		return false
	}
	t.Fatal(err)
	return false
}

// flowsWithCookie returns the flows of bridge with the port's cookie.
func flowsWithCookie(t *testing.T, c *ovs.Client, bridge, portID string) []ovs.Flow {
	t.Helper()
	f, err := c.DumpFlows(testCtx(t), bridge, ovs.CookieMatch(Cookie(portID)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// onlyFallback checks that bridge has no flow but the NORMAL fallback.
func onlyFallback(t *testing.T, c *ovs.Client, bridge string) {
	t.Helper()
	all, err := c.DumpFlows(testCtx(t), bridge, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Cookie != ovs.BaseCookie {
		t.Errorf("flows on %s: %v, want only the fallback", bridge, all)
	}
}
