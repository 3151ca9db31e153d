package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/quotasets"
)

// TestQuotaCLI: an admin lowers the demo project's quota with the real
// openstack CLI, demo's second server is refused with Nova's quota
// message, `openstack quota show` reads it (Neutron's quotas included),
// and once the quota is back to the defaults the boot succeeds.
func TestQuotaCLI(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	adminCLI, demoCLI := c.openstack(t, "admin", c.adminPass, "admin"), c.openstack(t, "demo", c.demoPass, "demo")
	admin, demo := adminCLI.run, demoCLI.run
	instances := func(showJSON string) float64 {
		t.Helper()
		var show map[string]any
		if err := json.Unmarshal([]byte(showJSON), &show); err != nil {
			t.Fatalf("quota show: %v\n%s", err, showJSON)
		}
		n, _ := show["instances"].(float64)
		return n
	}

	admin("quota", "set", "--instances", "1", "demo")
	if n := instances(admin("quota", "show", "demo", "-f", "json")); n != 1 {
		t.Fatalf("quota show demo: instances %v after set to 1", n)
	}
	// A member reads their own project's quota (and Neutron's, which
	// `quota show` fetches too).
	show := demo("quota", "show", "-f", "json")
	if n := instances(show); n != 1 || !strings.Contains(show, `"networks": 100`) {
		t.Fatalf("demo's quota show = %s", show)
	}
	demo("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--wait", "q1")
	out, err := demoCLI.try("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "q2")
	if err == nil || !strings.Contains(out, "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances") {
		t.Fatalf("second server under a quota of 1: err %v\n%s", err, out)
	}

	// OSC 6.0 has no `quota delete`: the API's DELETE (as novaclient's
	// quota-delete sends it) puts the defaults back.
	projectID := strings.TrimSpace(admin("project", "show", "demo", "-f", "value", "-c", "id"))
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := quotasets.Delete(ctx, cc, projectID).Err; err != nil {
		t.Fatalf("DELETE os-quota-sets/%s: %v", projectID, err)
	}
	if n := instances(admin("quota", "show", "demo", "-f", "json")); n != 10 {
		t.Fatalf("quota show demo after delete: instances %v, want the default 10", n)
	}
	demo("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--wait", "q2")
	demo("server", "delete", "--wait", "q1", "q2")
}
