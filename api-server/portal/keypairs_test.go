package portal

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestKeypairsPage: import, generate (the private key shown once,
// escaped), Nova's refusal shown with the form kept, delete with CSRF,
// and the launch form offering the keypair and sending key_name.
func TestKeypairsPage(t *testing.T) {
	e := newEnv(t)
	csrf := e.login("demo")
	st, page := e.get("/keypairs")
	if st != 200 || !strings.Contains(page, "No key pairs yet.") {
		t.Fatalf("empty keypairs page: %d\n%s", st, page)
	}
	resp := e.post("/keypairs", url.Values{"csrf": {csrf}, "name": {"laptop"}, "public_key": {"ssh-ed25519 AAAA me"}})
	if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/keypairs?done=keypair" {
		t.Fatalf("import: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = e.post("/keypairs", url.Values{"csrf": {csrf}, "name": {"made"}})
	b := body(resp)
	if resp.StatusCode != http.StatusCreated || !strings.Contains(b, "secret&lt;&amp;&gt;") || !strings.Contains(b, "shown only this once") {
		t.Fatalf("generate: %d\n%s", resp.StatusCode, b)
	}
	resp = e.postBack("/keypairs", url.Values{"csrf": {csrf}, "name": {"broken"}, "public_key": {"bad"}})
	b = body(resp)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "Keypair data is invalid: not a key") || !strings.Contains(b, `value="broken"`) {
		t.Errorf("refused import: %d\n%s", resp.StatusCode, b)
	}
	resp = e.postBack("/keypairs", url.Values{"csrf": {csrf}, "name": {" "}})
	if b := body(resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "Give the key pair a name.") {
		t.Errorf("no name: %d", resp.StatusCode)
	}
	_, page = e.get("/keypairs")
	if !strings.Contains(page, "laptop") || !strings.Contains(page, "made") || strings.Contains(page, "secret") {
		t.Errorf("keypairs list:\n%s", page)
	}
	for _, v := range e.api.keypairVersions {
		if v != "compute 2.2" {
			t.Errorf("keypair create asked microversion %q, want compute 2.2", v)
		}
	}

	// Launch offers the keypair and sends it.
	_, page = e.get("/launch")
	if !strings.Contains(page, `<option value="laptop"`) {
		t.Errorf("launch form lacks the keypair:\n%s", page)
	}
	resp = e.post("/launch", url.Values{"csrf": {csrf}, "name": {"k"}, "image": {"img-1"}, "flavor": {"1"}, "key_name": {"laptop"}, "count": {"1"}})
	resp.Body.Close()
	got, _ := json.Marshal(e.api.created)
	if !strings.Contains(string(got), `"key_name":"laptop"`) {
		t.Errorf("create request %s lacks key_name", got)
	}

	// Delete needs the CSRF token.
	resp = e.post("/keypairs/made/delete", url.Values{"csrf": {"forged"}})
	if resp.Body.Close(); resp.StatusCode != http.StatusForbidden {
		t.Errorf("delete with a forged token: %d", resp.StatusCode)
	}
	resp = e.post("/keypairs/made/delete", url.Values{"csrf": {csrf}})
	if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	_, page = e.get("/keypairs")
	if strings.Contains(page, ">made<") {
		t.Errorf("after delete:\n%s", page)
	}
	if len(e.api.keypairs) != 1 || e.api.keypairs[0] != "laptop" {
		t.Errorf("keypairs left %v, want [laptop]", e.api.keypairs)
	}
}
