package compute

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/shadowpw"
	"github.com/capsule-cloud/capsule/store"
)

// changePassword sends the host a SHA-512 crypt hash of the new password
// (never the password) and answers 202; a host that cannot (no
// /etc/shadow) makes it Nova's 501 with the reason; a server not ACTIVE is
// a 409; a body without adminPass a 400.
func TestChangePassword(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	var got []protocol.SetAdminPassword
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := f.bus.Consume(ctx, bus.ComputeQueue("h1"), func(_ context.Context, m bus.Message) (any, error) {
		var req protocol.SetAdminPassword
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		if len(got) > 1 { // the second call: an image without /etc/shadow
			return nil, errdefs.NotSupportedf("the server's image has no /etc/shadow to hold a root password")
		}
		return struct{}{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	id := f.create("demo", "pw")
	f.activate(id, "h1")
	body := `{"changePassword":{"adminPass":"n3w-Secret"}}`
	if resp, b := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", body); resp.StatusCode != 202 {
		t.Fatalf("changePassword: %d %v", resp.StatusCode, b)
	}
	mu.Lock()
	req := got[0]
	mu.Unlock()
	if !strings.HasPrefix(req.Hash, "$6$") || strings.Contains(req.Hash, "n3w-Secret") || req.InstanceID != id {
		t.Errorf("host got %+v, want a $6$ hash of the password", req)
	}
	resp, b := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", body)
	if resp.StatusCode != 501 || !strings.Contains(anyFaultMessage(b), "Unable to set password on instance") ||
		!strings.Contains(anyFaultMessage(b), "/etc/shadow") {
		t.Errorf("image without /etc/shadow: %d %v, want 501 saying why", resp.StatusCode, b)
	}
	if resp, b := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"changePassword":{}}`); resp.StatusCode != 400 {
		t.Errorf("no adminPass: %d %v", resp.StatusCode, b)
	}
	f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("vm_state", string(lifecycle.Stopped))
	if resp, b := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", body); resp.StatusCode != 409 {
		t.Errorf("SHUTOFF server: %d %v", resp.StatusCode, b)
	}
	if resp, _ := f.do("POST", "/v2.1/servers/"+id+"/action", "read", body); resp.StatusCode != 403 {
		t.Errorf("reader: %d, want 403", resp.StatusCode)
	}
	if resp, _ := f.do("POST", "/v2.1/servers/"+id+"/action", "other", body); resp.StatusCode != 404 {
		t.Errorf("another project: %d, want 404", resp.StatusCode)
	}
}

// TestAdminPassReachesTheHost: create, rebuild and rescue answer the
// adminPass (the caller's or a generated one) and hand the host only its
// SHA-512 crypt hash (the create's and rebuild's in the server's spec, for
// its new disk; the rescue's in the action); with enable_instance_password
// off none is answered nor sent, as Nova does.
func TestAdminPassReachesTheHost(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do("POST", "/v2.1/servers", "demo",
		`{"server":{"name":"pw","imageRef":"`+f.image+`","flavorRef":"1","adminPass":"cr3ate-Pass"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	srv := body["server"].(map[string]any)
	id := srv["id"].(string)
	if srv["adminPass"] != "cr3ate-Pass" {
		t.Errorf("create adminPass %v", srv["adminPass"])
	}
	var inst store.Instance
	f.st.DB.First(&inst, "id = ?", id)
	if !shadowpw.Verify("cr3ate-Pass", inst.AdminPassHash) {
		t.Fatalf("stored hash %q is not the create's password's", inst.AdminPassHash)
	}
	spec, err := instance.SpecFor(context.Background(), f.st, &inst)
	if err != nil || spec.AdminPassHash != inst.AdminPassHash {
		t.Errorf("build spec hash %q (%v), want the stored one", spec.AdminPassHash, err)
	}
	// A generated password is hashed the same way.
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"gen","imageRef":"`+f.image+`","flavorRef":"1"}}`)
	gen := body["server"].(map[string]any)
	var genInst store.Instance
	f.st.DB.First(&genInst, "id = ?", gen["id"])
	if p, _ := gen["adminPass"].(string); resp.StatusCode != 202 || len(p) < 8 || !shadowpw.Verify(p, genInst.AdminPassHash) {
		t.Errorf("generated adminPass %v, hash %q", gen["adminPass"], genInst.AdminPassHash)
	}

	f.placeActive(id, 1)
	action := "/v2.1/servers/" + id + "/action"
	resp, body = f.do("POST", action, "demo", `{"rebuild":{"imageRef":"`+f.image+`","adminPass":"r3build-Pass"}}`)
	if resp.StatusCode != 202 || body["server"].(map[string]any)["adminPass"] != "r3build-Pass" {
		t.Fatalf("rebuild: %d %v", resp.StatusCode, body)
	}
	var rb protocol.RebuildInstance
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindRebuildInstance, &rb)
	if !shadowpw.Verify("r3build-Pass", rb.Spec.AdminPassHash) || strings.Contains(string(mustJSON(t, rb)), "r3build-Pass") {
		t.Errorf("rebuild cast hash %q (the password itself must not travel)", rb.Spec.AdminPassHash)
	}
	f.st.DB.First(&inst, "id = ?", id)
	if inst.AdminPassHash != rb.Spec.AdminPassHash {
		t.Errorf("stored hash after rebuild %q, want the rebuild's", inst.AdminPassHash)
	}
	f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("task_state", "")

	resp, body = f.do("POST", action, "demo", `{"rescue":{"adminPass":"r3scue-Pass"}}`)
	if resp.StatusCode != 200 || body["adminPass"] != "r3scue-Pass" {
		t.Fatalf("rescue: %d %v", resp.StatusCode, body)
	}
	var act protocol.InstanceAction
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &act)
	if act.Action != lifecycle.ActRescue || !shadowpw.Verify("r3scue-Pass", act.RescuePassHash) {
		t.Errorf("rescue cast %+v", act)
	}
	f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Updates(map[string]any{"task_state": "", "vm_state": "active"})

	// enable_instance_password = false.
	f.svc.opts.NoInstancePassword = true
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"nopw","imageRef":"`+f.image+`","flavorRef":"1","adminPass":"x"}}`)
	nopw := body["server"].(map[string]any)
	if _, has := nopw["adminPass"]; resp.StatusCode != 202 || has {
		t.Errorf("create without instance passwords: %d %v", resp.StatusCode, nopw)
	}
	var nopwInst store.Instance
	f.st.DB.First(&nopwInst, "id = ?", nopw["id"])
	if nopwInst.AdminPassHash != "" {
		t.Errorf("hash %q stored without instance passwords", nopwInst.AdminPassHash)
	}
	resp, body = f.do("POST", action, "demo", `{"rebuild":{"imageRef":"`+f.image+`"}}`)
	if _, has := body["server"].(map[string]any)["adminPass"]; resp.StatusCode != 202 || has {
		t.Errorf("rebuild without instance passwords: %d %v", resp.StatusCode, body)
	}
	rb = protocol.RebuildInstance{}
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindRebuildInstance, &rb)
	if rb.Spec.AdminPassHash != "" {
		t.Errorf("rebuild without instance passwords cast hash %q", rb.Spec.AdminPassHash)
	}
	f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("task_state", "")
	resp, body = f.do("POST", action, "demo", `{"rescue":null}`)
	if resp.StatusCode != 200 || len(body) != 0 {
		t.Errorf("rescue without instance passwords: %d %v, want 200 {}", resp.StatusCode, body)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
