package compute

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
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
