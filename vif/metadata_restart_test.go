package vif

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/capsule-cloud/capsule/protocol"
)

// getMetadata sends GET / to 169.254.169.254:80 from inside n (a
// connection of its own: an HTTP client would dial from another thread,
// outside n) and returns the body.
func getMetadata(t *testing.T, n netnsT) (string, error) {
	t.Helper()
	var c net.Conn
	if err := inNamespace(n.handle(t), func() error {
		var err error
		c, err = net.DialTimeout("tcp4", "169.254.169.254:80", 2*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	return body, nil
}

// serveMetadata makes bridge's metadata port with a Plumber of its own
// (as an agent that starts) and serves, until the test ends or the
// returned stop, an answer naming round and the client's address.
func serveMetadata(t *testing.T, p *Plumber, bridge string, round int) (stop func()) {
	t.Helper()
	ln, err := p.ListenMetadata(testCtx(t), bridge)
	if err != nil {
		t.Fatalf("round %d: ListenMetadata: %v", round, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "round %d from %s", round, r.RemoteAddr)
	}), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	stop = func() {
		_ = srv.Close()
		<-done
		_ = ln.Close()
	}
	t.Cleanup(stop)
	return stop
}

// mustGetMetadata waits up to 20 s for the server in n to read round's
// answer, and logs the port's state when it does not.
func mustGetMetadata(t *testing.T, c interface {
	Ofctl(context.Context, string, ...string) (string, error)
	Vsctl(context.Context, ...string) (string, error)
}, br string, n netnsT, round int) {
	t.Helper()
	var body string
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if body, err = getMetadata(t, n); err == nil {
			break
		}
	}
	if err == nil && !strings.HasPrefix(body, fmt.Sprintf("round %d from 169.254.", round)) {
		err = fmt.Errorf("answer %q", body)
	}
	if err != nil {
		flows, _ := c.Ofctl(context.Background(), "", "dump-flows", br)
		port, _ := c.Vsctl(context.Background(), "list", "Interface", MetadataIfName(br))
		t.Fatalf("round %d: the metadata service is unreachable: %v\nflows:\n%s\nport:\n%s", round, err, flows, port)
	}
}

// TestMetadataPortSurvivesAgentRestarts: each "agent" makes the bridge's
// metadata port again over the previous one's (gone at once, or after a
// while, as its namespace goes), and the server reaches the new
// listener each time, its port still up a moment later.
func TestMetadataPortSurvivesAgentRestarts(t *testing.T) {
	t.Parallel()
	c, br, p := setup(t)
	p.WithMetadata()
	nic := vlanNIC(t, subnet(t), 10, 101, true)
	id, n := plug(t, p, nic)
	if d, err := p.Drift(testCtx(t), id, n.path, []protocol.NIC{nic}); err != nil || d != "" {
		t.Errorf("drift of a server with the metadata service right after its Plug: %q %v", d, err)
	}
	for round := range 4 {
		stop := serveMetadata(t, New(c, map[string]string{"physnet1": br}, testLogger(t)).WithMetadata(), br, round)
		mustGetMetadata(t, c, br, n, round)
		time.Sleep(500 * time.Millisecond)
		if ok, err := p.MetadataPortHealthy(testCtx(t), br); err != nil || !ok {
			t.Errorf("round %d: metadata port healthy = %v, %v", round, ok, err)
		}
		stop()
		time.Sleep(time.Duration(round) * time.Second)
	}
}

// TestMetadataPortDownIsUnhealthy: a metadata port whose device was set
// down (as OVS's flag restore did to a restarted agent's new device) is
// in OVS as before, with its OpenFlow number and no error, but carries
// nothing: the health check says so, and making the port again (what
// the agent's metadata server then does) serves again.
func TestMetadataPortDownIsUnhealthy(t *testing.T) {
	t.Parallel()
	c, br, p := setup(t)
	p.WithMetadata()
	_, n := plug(t, p, vlanNIC(t, subnet(t), 10, 101, true))
	stop := serveMetadata(t, p, br, 0)
	mustGetMetadata(t, c, br, n, 0)
	ctx := testCtx(t)
	if ok, err := p.MetadataPortHealthy(ctx, br); err != nil || !ok {
		t.Fatalf("a new metadata port: healthy = %v, %v", ok, err)
	}
	link, err := netlink.LinkByName(MetadataIfName(br))
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.MetadataPortHealthy(ctx, br); err != nil || ok {
		t.Errorf("a metadata port set down: healthy = %v, %v; want false", ok, err)
	}
	if _, err := getMetadata(t, n); err == nil {
		t.Errorf("the server reached the service through a port set down")
	}
	stop()
	serveMetadata(t, p, br, 1)
	mustGetMetadata(t, c, br, n, 1)
	if ok, err := p.MetadataPortHealthy(ctx, br); err != nil || !ok {
		t.Errorf("the metadata port made again: healthy = %v, %v", ok, err)
	}
}
