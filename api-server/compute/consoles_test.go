package compute

import (
	"context"
	"testing"
)

// issuerStub records the URLs asked for.
type issuerStub struct{ issued []string }

func (s *issuerStub) Issue(_ context.Context, instanceID, projectID string) (string, error) {
	s.issued = append(s.issued, instanceID+"/"+projectID)
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
	if len(iss.issued) != 1 || iss.issued[0] != id+"/p-demo" {
		t.Errorf("issued %v", iss.issued)
	}
	// Before 2.6 the resource does not exist; the action does.
	resp, body = f.do("POST", path, "demo", serial, v("2.5")...)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"os-getSerialConsole": {"type": "serial"}}`)
	if c, _ := body["console"].(map[string]any); resp.StatusCode != 200 || c["type"] != "serial" || c["url"] == "" {
		t.Errorf("os-getSerialConsole = %d %v", resp.StatusCode, body)
	}
	// Graphical consoles are not enabled; bad bodies are refused.
	for _, b := range []string{
		`{"remote_console": {"protocol": "vnc", "type": "novnc"}}`,
		`{"remote_console": {"protocol": "spice", "type": "spice-html5"}}`,
		`{"remote_console": {"protocol": "serial", "type": "novnc"}}`,
		`{"remote_console": {"protocol": "telnet", "type": "serial"}}`,
		`{"remote_console": {"protocol": "mks", "type": "webmks"}}`, // 2.8
		`{}`,
	} {
		resp, body = f.do("POST", path, "demo", b, v("2.6")...)
		expectFault(t, resp, body, 400, "badRequest")
	}
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"os-getVNCConsole": {"type": "novnc"}}`)
	expectFault(t, resp, body, 400, "badRequest")
	if len(iss.issued) != 2 {
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
	if resp, body = f.do("POST", path, "admin", serial, v("2.6")...); resp.StatusCode != 200 {
		t.Errorf("admin serial console = %d %v", resp.StatusCode, body)
	}
	if len(iss.issued) != 3 {
		t.Errorf("issued %v", iss.issued)
	}

	// Without a proxy the serial console is not enabled.
	f.svc.opts.Consoles = nil
	resp, body = f.do("POST", path, "demo", serial, v("2.6")...)
	expectFault(t, resp, body, 400, "badRequest")
}
