package compute

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// issuerStub records the URLs asked for.
type issuerStub struct{ issued []string }

func (s *issuerStub) Issue(_ context.Context, instanceID, projectID, typ string) (string, error) {
	s.issued = append(s.issued, instanceID+"/"+projectID+"/"+typ)
	if typ == "novnc" {
		return "http://proxy/console/novnc/vnc_auto.html?path=%3Ftoken%3Dt" + instanceID, nil
	}
	return "ws://proxy/console/serial?token=t" + instanceID, nil
}

func TestRemoteConsoles(t *testing.T) {
	f := newFixture(t)
	iss := &issuerStub{}
	f.svc.opts.Consoles = iss
	id := f.create("demo", "vm")
	path := "/v2.1/servers/" + id + "/remote-consoles"
	serial := `{"remote_console": {"protocol": "serial", "type": "serial"}}`
	v := func(mv string) []string { return []string{"X-OpenStack-Nova-API-Version", mv} }

	resp, body := f.do("POST", path, "demo", serial, v("2.6")...)
	expectFault(t, resp, body, 409, "conflictingRequest") // still BUILD
	f.activate(id, "h1")

	resp, body = f.do("POST", path, "demo", serial, v("2.6")...)
	if resp.StatusCode != 200 {
		t.Fatalf("serial console = %d %v", resp.StatusCode, body)
	}
	rc := body["remote_console"].(map[string]any)
	if rc["protocol"] != "serial" || rc["type"] != "serial" || rc["url"] != "ws://proxy/console/serial?token=t"+id {
		t.Errorf("remote_console = %v", rc)
	}
	if len(iss.issued) != 1 || iss.issued[0] != id+"/p-demo/serial" {
		t.Errorf("issued %v", iss.issued)
	}
	// Before 2.6 the resource does not exist; the action does.
	resp, body = f.do("POST", path, "demo", serial, v("2.5")...)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"os-getSerialConsole": {"type": "serial"}}`)
	if c, _ := body["console"].(map[string]any); resp.StatusCode != 200 || c["type"] != "serial" || c["url"] == "" {
		t.Errorf("os-getSerialConsole = %d %v", resp.StatusCode, body)
	}
	// vnc/novnc: the proxy's HTML5 console page (2.6 and the action).
	resp, body = f.do("POST", path, "demo", `{"remote_console": {"protocol": "vnc", "type": "novnc"}}`, v("2.6")...)
	if resp.StatusCode != 200 {
		t.Fatalf("novnc console = %d %v", resp.StatusCode, body)
	}
	rc = body["remote_console"].(map[string]any)
	if rc["protocol"] != "vnc" || rc["type"] != "novnc" || rc["url"] != "http://proxy/console/novnc/vnc_auto.html?path=%3Ftoken%3Dt"+id {
		t.Errorf("novnc remote_console = %v", rc)
	}
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"os-getVNCConsole": {"type": "novnc"}}`)
	if c, _ := body["console"].(map[string]any); resp.StatusCode != 200 || c["type"] != "novnc" ||
		c["url"] != "http://proxy/console/novnc/vnc_auto.html?path=%3Ftoken%3Dt"+id {
		t.Errorf("os-getVNCConsole = %d %v", resp.StatusCode, body)
	}
	if len(iss.issued) != 4 || iss.issued[2] != id+"/p-demo/novnc" || iss.issued[3] != id+"/p-demo/novnc" {
		t.Errorf("issued %v", iss.issued)
	}

	// Other graphical consoles are not enabled (Nova's 400 "Unavailable
	// console type"); bad bodies are refused with the schema's 400.
	for _, c := range []struct{ mv, body, msg string }{
		{"2.6", `{"remote_console": {"protocol": "vnc", "type": "xvpvnc"}}`, "Unavailable console type xvpvnc."},
		{"2.6", `{"remote_console": {"protocol": "spice", "type": "spice-html5"}}`, "Unavailable console type spice-html5."},
		{"2.6", `{"remote_console": {"protocol": "rdp", "type": "rdp-html5"}}`, "Unavailable console type rdp-html5."},
		{"2.8", `{"remote_console": {"protocol": "mks", "type": "webmks"}}`, "Unavailable console type webmks."},
		{"2.6", `{"remote_console": {"protocol": "mks", "type": "webmks"}}`, "is not one of"}, // mks from 2.8
		{"2.6", `{"remote_console": {"protocol": "serial", "type": "novnc"}}`, "Invalid console type novnc for protocol serial"},
		{"2.6", `{"remote_console": {"protocol": "vnc", "type": "serial"}}`, "Invalid console type serial for protocol vnc"},
		{"2.6", `{"remote_console": {"protocol": "telnet", "type": "serial"}}`, "is not one of"},
		{"2.6", `{}`, "'remote_console' is a required property"},
	} {
		resp, body = f.do("POST", path, "demo", c.body, v(c.mv)...)
		expectFault(t, resp, body, 400, "badRequest")
		if msg := fmt.Sprint(body["badRequest"]); !strings.Contains(msg, c.msg) {
			t.Errorf("%s at %s: %s, want %q", c.body, c.mv, msg, c.msg)
		}
	}
	for _, c := range []struct{ body, msg string }{
		{`{"os-getVNCConsole": {"type": "xvpvnc"}}`, "Unavailable console type xvpvnc."},
		{`{"os-getVNCConsole": {"type": "spice-html5"}}`, "is not one of ['novnc', 'xvpvnc']"},
		{`{"os-getVNCConsole": {}}`, "'type' is a required property"},
		{`{"os-getSPICEConsole": {"type": "spice-html5"}}`, "Unavailable console type spice-html5."},
		{`{"os-getRDPConsole": {"type": "rdp-html5"}}`, "Unavailable console type rdp-html5."},
		{`{"os-getSerialConsole": {"type": "novnc"}}`, "Unavailable console type novnc."},
	} {
		resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", c.body)
		expectFault(t, resp, body, 400, "badRequest")
		if msg := fmt.Sprint(body["badRequest"]); !strings.Contains(msg, c.msg) {
			t.Errorf("%s: %s, want %q", c.body, msg, c.msg)
		}
	}
	if len(iss.issued) != 4 {
		t.Errorf("refused requests issued URLs: %v", iss.issued)
	}

	// Isolation: another project does not see the server, a reader may
	// not open a console, no or a garbage token is not authenticated; an
	// admin may.
	resp, body = f.do("POST", path, "other", serial, v("2.6")...)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "other", `{"os-getSerialConsole": {"type": "serial"}}`)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", path, "read", serial, v("2.6")...)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("POST", path, "", serial, v("2.6")...)
	expectFault(t, resp, body, 401, "unauthorized")
	resp, body = f.do("POST", path, "garbage", serial, v("2.6")...)
	expectFault(t, resp, body, 401, "unauthorized")
	novnc := `{"remote_console": {"protocol": "vnc", "type": "novnc"}}`
	resp, body = f.do("POST", path, "other", novnc, v("2.6")...)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "other", `{"os-getVNCConsole": {"type": "novnc"}}`)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", path, "read", novnc, v("2.6")...)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("POST", path, "garbage", novnc, v("2.6")...)
	expectFault(t, resp, body, 401, "unauthorized")
	if resp, body = f.do("POST", path, "admin", serial, v("2.6")...); resp.StatusCode != 200 {
		t.Errorf("admin serial console = %d %v", resp.StatusCode, body)
	}
	if resp, body = f.do("POST", path, "admin", novnc, v("2.6")...); resp.StatusCode != 200 {
		t.Errorf("admin novnc console = %d %v", resp.StatusCode, body)
	}
	if len(iss.issued) != 6 || iss.issued[5] != id+"/p-demo/novnc" {
		t.Errorf("issued %v", iss.issued)
	}

	// Without a proxy no console is enabled.
	f.svc.opts.Consoles = nil
	for _, b := range []string{serial, novnc} {
		resp, body = f.do("POST", path, "demo", b, v("2.6")...)
		expectFault(t, resp, body, 400, "badRequest")
	}
}

// TestRemoteConsoleNotRunning: a server that is not running answers
// Nova's 409 for every console type the proxy serves, before any URL is
// issued.
func TestRemoteConsoleNotRunning(t *testing.T) {
	f := newFixture(t)
	iss := &issuerStub{}
	f.svc.opts.Consoles = iss
	id := f.create("demo", "vm")
	v := []string{"X-OpenStack-Nova-API-Version", "2.6"}
	for _, b := range []string{`{"remote_console": {"protocol": "vnc", "type": "novnc"}}`, `{"remote_console": {"protocol": "serial", "type": "serial"}}`} {
		resp, body := f.do("POST", "/v2.1/servers/"+id+"/remote-consoles", "demo", b, v...)
		expectFault(t, resp, body, 409, "conflictingRequest")
		if msg := fmt.Sprint(body["conflictingRequest"]); !strings.Contains(msg, "Instance "+id+" is not ready") {
			t.Errorf("%s: %s", b, msg)
		}
	}
	resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"os-getVNCConsole": {"type": "novnc"}}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if len(iss.issued) != 0 {
		t.Errorf("issued %v for a server in BUILD", iss.issued)
	}
}
