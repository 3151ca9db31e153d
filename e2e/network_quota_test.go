package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestNetworkQuotaCLI: an admin sets the demo project's Neutron quotas
// with the real openstack CLI (`quota set --networks 2 --ports 5`),
// `openstack quota show` reads them back, and demo's third network is
// refused with Neutron's OverQuota message.
func TestNetworkQuotaCLI(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	adminCLI, demoCLI := c.openstack(t, "admin", c.adminPass, "admin"), c.openstack(t, "demo", c.demoPass, "demo")
	admin, demo := adminCLI.run, demoCLI.run

	admin("quota", "set", "--networks", "2", "--ports", "5", "demo")
	for _, show := range []string{admin("quota", "show", "demo", "-f", "json"), demo("quota", "show", "-f", "json")} {
		var q map[string]any
		if err := json.Unmarshal([]byte(show), &q); err != nil {
			t.Fatalf("quota show: %v\n%s", err, show)
		}
		if q["networks"] != float64(2) || q["ports"] != float64(5) || q["subnets"] != float64(100) {
			t.Fatalf("quota show after set --networks 2 --ports 5: networks %v ports %v subnets %v",
				q["networks"], q["ports"], q["subnets"])
		}
	}
	demo("network", "create", "qnet1")
	demo("network", "create", "qnet2")
	out, err := demoCLI.try("network", "create", "qnet3")
	if err == nil || !strings.Contains(out, "Quota exceeded for resources: ['network']") {
		t.Fatalf("third network under a quota of 2: err %v\n%s", err, out)
	}
	// A member cannot raise its own quota.
	if out, err := demoCLI.try("quota", "set", "--networks", "10", "demo"); err == nil {
		t.Fatalf("demo raised its own network quota:\n%s", out)
	}
	admin("quota", "set", "--networks", "3", "demo")
	demo("network", "create", "qnet3")
	demo("network", "delete", "qnet1", "qnet2", "qnet3")
}
