package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gorilla/websocket"
)

// remoteConsole POSTs a remote console request at microversion 2.6.
func remoteConsole(t *testing.T, token, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-OpenStack-Nova-API-Version", "2.6")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSerialConsole: `openstack console url show --serial` gives a ws://
// URL of the console proxy; a websocket client opening it gets a shell in
// the server (on real dockerd): `hostname` prints the server's name. The
// URL works once; another project cannot get one for the server, a reader
// may not.
func TestSerialConsole(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	ctx := context.Background()
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	images := c.imageIDs(t, "demo", c.demoPass, "demo")
	name := "con-" + uuid.NewString()[:6]
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: name, ImageRef: images["busybox"], FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)

	cli := c.openstack(t, "demo", c.demoPass, "demo")
	url := strings.TrimSpace(cli.run("console", "url", "show", "--serial", srv.ID, "-f", "value", "-c", "url"))
	if !strings.HasPrefix(url, "ws://") {
		t.Fatalf("console url %q, want ws://", url)
	}
	d := websocket.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	start := time.Now()
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("hostname\n")); err != nil {
		t.Fatal(err)
	}
	var seen strings.Builder
	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	// The terminal echoes the command; the name comes on a line of its own.
	for !strings.Contains(strings.ReplaceAll(seen.String(), "\r", ""), "\n"+name+"\n") {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("read the console (so far %q): %v", seen.String(), err)
		}
		seen.Write(b)
	}
	t.Logf("hostname through the serial console in %v", time.Since(start))
	ws.Close()

	// Single use.
	if _, resp, err := d.Dial(url, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("second use of the console URL: %v %v, want 401", resp, err)
	}

	// Another project does not see the server; a reader may not open a
	// console; an unknown token is refused.
	admin := c.openstack(t, "admin", c.adminPass, "admin")
	other, otherPass := "con-other-"+uuid.NewString()[:6], "pw-"+uuid.NewString()[:8]
	admin.run("project", "create", other)
	admin.run("user", "create", "--password", otherPass, "--project", other, other)
	admin.run("role", "add", "--project", other, "--user", other, "member")
	admin.run("user", "create", "--password", otherPass, "--project", "demo", other+"-r")
	admin.run("role", "add", "--project", "demo", "--user", other+"-r", "reader")
	path := demo.ServiceURL("servers", srv.ID, "remote-consoles")
	body := `{"remote_console": {"protocol": "serial", "type": "serial"}}`
	oc := c.computeClient(t, other, otherPass, other)
	if code, b := remoteConsole(t, oc.TokenID, path, body); code != 404 {
		t.Errorf("other project's console URL: %d %s, want 404", code, b)
	}
	if out, err := c.openstack(t, other, otherPass, other).try("console", "url", "show", "--serial", srv.ID); err == nil {
		t.Errorf("other project got a console URL:\n%s", out)
	}
	rc := c.computeClient(t, other+"-r", otherPass, "demo")
	if code, b := remoteConsole(t, rc.TokenID, path, body); code != 403 {
		t.Errorf("reader's console URL: %d %s, want 403", code, b)
	}
	if code, b := remoteConsole(t, "garbage", path, body); code != 401 {
		t.Errorf("garbage token: %d %s, want 401", code, b)
	}
	if code, b := remoteConsole(t, demo.TokenID, path, `{"remote_console": {"protocol": "spice", "type": "spice-html5"}}`); code != 400 ||
		!strings.Contains(b, "Unavailable console type") {
		t.Errorf("spice console: %d %s, want 400 Unavailable console type", code, b)
	}
	forged := url[:strings.Index(url, "token=")+len("token=")] + fmt.Sprintf("%064x", 1)
	if _, resp, err := d.Dial(forged, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged token: %v %v, want 401", resp, err)
	}

	// A stopped server has no console.
	if err := servers.Stop(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, srv.ID, "SHUTOFF", 60*time.Second)
	if code, b := remoteConsole(t, demo.TokenID, path, body); code != 409 {
		t.Errorf("console of a stopped server: %d %s, want 409", code, b)
	}
}
