//go:build bench

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestBootBenchNetworked runs `capsule bench boot --network` (issue 15's
// P1 and P2) on a one-host cloud with a real OVS bridge and a VLAN
// network with port security, beside raw `docker run --net=none` on the
// same dockerd, and logs both tables and the per-boot OVS command count
// from the agent's debug log. A benchmark, not a timed test: it fails only
// when a boot fails. CAPSULE_BENCH_SERIAL and CAPSULE_BENCH_CONCURRENT
// set the boot counts (default 20 and 50); CAPSULE_BENCH_LOG copies the
// capsuled log there for reading where the time went. Behind the build
// tag bench (not ratetest: it asserts no tolerance, and CI does not pay
// for its 70 boots): go test -tags bench -run TestBootBenchNetworked -v ./e2e
func TestBootBenchNetworked(t *testing.T) {
	c := startCloud(t, withBridge, withQuota(60))
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	netID, _ := vlanNetwork(t, nc, "bench-net", 177, "10.77.0.0/16", true)
	bin := buildCapsuleCLI(t)
	count := func(env string, def int) string {
		if n, err := strconv.Atoi(os.Getenv(env)); err == nil && n > 0 {
			return strconv.Itoa(n)
		}
		return strconv.Itoa(def)
	}
	logPath := filepath.Join(c.dir, "capsuled.log")
	ovsCalls := func() int {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), `msg="ovs command"`)
	}
	bench := func(n, conc string) {
		before := ovsCalls()
		cmd := exec.Command(bin, "bench", "boot", "--count", n, "--concurrency", conc, "--network", netID,
			"--docker-host", c.dockerHost, "--raw-image", os.Getenv("CAPSULE_TEST_IMAGE"))
		cmd.Env = c.env("admin", c.adminPass, "admin")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("capsule bench boot: %v\n%s", err, out)
		}
		boots, _ := strconv.Atoi(n)
		t.Logf("bench boot --count %s --concurrency %s --network:\n%s\novs-vsctl/ovs-ofctl runs per boot-and-delete: %.1f",
			n, conc, out, float64(ovsCalls()-before)/float64(boots))
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && (f[0] == "capsule," || f[0] == "raw") && f[len(f)-1] != "0" {
				t.Errorf("bench had failures: %q", line)
			}
		}
	}
	bench(count("CAPSULE_BENCH_SERIAL", 20), "1")
	bench(count("CAPSULE_BENCH_CONCURRENT", 50), "10")
	if dst := os.Getenv("CAPSULE_BENCH_LOG"); dst != "" {
		if b, err := os.ReadFile(logPath); err == nil {
			_ = os.WriteFile(dst, b, 0o644)
		}
	}
}
