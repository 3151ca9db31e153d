package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

// tempestSuites are the Tempest API tests TestTempest runs (a regular
// expression over their ids): the compute and network security-group
// tests (issue 16's proof).
const tempestSuites = `^tempest\.api\.(compute\.security_groups|network\.test_security_groups)`

// TestTempest runs Tempest's own API tests (the Debian python3-tempest
// package) against a cloud of its own, as an operator runs them against a
// deployment: dynamic credentials (Tempest makes a project and users per
// test class through Keystone as admin), the busybox image, flavors
// m1.tiny and m1.small, the shared network "private". It fails on any
// failed test.
func TestTempest(t *testing.T) {
	t.Parallel()
	_, err := exec.LookPath("tempest")
	testenv.Require(t, err == nil, "tempest not installed (apt-get install python3-tempest, as .ci/run does)")

	c := startCloud(t, withBridge, withQuota(40))
	env := c.acceptanceEnv(t)
	value := func(name string) string {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, name+"="); ok {
				return v
			}
		}
		t.Fatalf("%s not in the acceptance environment", name)
		return ""
	}

	// A workspace of this run's own: Tempest registers workspaces by name
	// under $HOME/.tempest, and reads $TEMPEST_CONFIG_DIR's tempest.conf
	// rather than a global /etc/tempest one.
	dir := filepath.Join(t.TempDir(), "tempest")
	tempestEnv := append(os.Environ(), "HOME="+t.TempDir(), "TEMPEST_CONFIG_DIR="+filepath.Join(dir, "etc"),
		"TEMPEST_CONFIG=tempest.conf")
	initCmd := exec.Command("tempest", "init", dir)
	initCmd.Env = tempestEnv
	if out, err := initCmd.CombinedOutput(); err != nil {
		t.Fatalf("tempest init: %v\n%s", err, out)
	}
	conf := fmt.Sprintf(`[DEFAULT]
log_file = tempest.log

[auth]
admin_username = admin
admin_password = %[1]s
admin_project_name = admin
admin_domain_name = Default
use_dynamic_credentials = true
# No routers here: Tempest's per-project network would need one.
create_isolated_networks = false

[identity]
uri_v3 = %[2]s
auth_version = v3
region = RegionOne
v3_endpoint_type = public

[identity-feature-enabled]
api_v2 = false

[compute]
image_ref = %[3]s
image_ref_alt = %[3]s
flavor_ref = 1
flavor_ref_alt = 2
fixed_network_name = private
max_microversion = 2.96
build_timeout = 120

[network]
project_networks_reachable = false
shared_physical_network = true

[network-feature-enabled]
api_extensions = all

[validation]
run_validation = false

[service_available]
nova = true
neutron = true
glance = true
cinder = false
swift = false
`, c.adminPass, c.authURL(), value("OS_IMAGE_ID"))
	if err := os.WriteFile(filepath.Join(dir, "etc", "tempest.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tempest", "run", "--regex", tempestSuites, "--concurrency", "2")
	cmd.Dir, cmd.Env = dir, tempestEnv
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	totals := regexp.MustCompile(`(?m)^ - (Passed|Skipped|Failed): (\d+)$`).FindAllStringSubmatch(string(out), -1)
	var summary []string
	for _, m := range totals {
		summary = append(summary, m[1]+" "+m[2])
	}
	t.Logf("tempest %s: %s", tempestSuites, strings.Join(summary, ", "))
	for _, m := range regexp.MustCompile(`(?m)^\{\d+\} (\S+) .*\.\.\. SKIPPED: (.*)$`).FindAllStringSubmatch(string(out), -1) {
		t.Logf("skipped %s: %s", m[1], m[2])
	}
	if err != nil {
		failed := regexp.MustCompile(`(?m)^\{\d+\} (\S+) .*\.\.\. FAILED$`).FindAllStringSubmatch(string(out), -1)
		var names []string
		for _, m := range failed {
			names = append(names, m[1])
		}
		log, _ := os.ReadFile(filepath.Join(dir, "tempest.log"))
		t.Fatalf("tempest run: %v; failed: %v\n%s\n--- tempest.log (tail) ---\n%s", err, names, tail(string(out), 8000), tail(string(log), 4000))
	}
	if !strings.Contains(string(out), " - Passed: ") {
		t.Fatalf("tempest ran nothing:\n%s", tail(string(out), 4000))
	}
}
