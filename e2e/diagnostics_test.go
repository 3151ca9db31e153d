package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/capsule-cloud/capsule/vif"
)

// diagnostics GETs a server's diagnostics at microversion v.
func diagnostics(t *testing.T, cc *gophercloud.ServiceClient, id, v string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest("GET", cc.ServiceURL("servers", id, "diagnostics"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", cc.TokenID)
	req.Header.Set("X-OpenStack-Nova-API-Version", v)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("diagnostics of %s at %s: status %d, non-JSON body %q", id, v, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

// TestDiagnostics: the counters an admin reads through the API are the
// server's real ones: CPU time grows while a burner runs in it, its memory
// is in use under the flavor's limit, its tasks are counted under their
// limit; members may not look.
func TestDiagnostics(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	images := c.imageIDs(t, "demo", c.demoPass, "demo")
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "diag", ImageRef: images["busybox"], FlavorRef: "2"}, nil).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)

	if code, body := diagnostics(t, demo, srv.ID, "2.48"); code != 403 {
		t.Errorf("member reads diagnostics: %d %v, want 403", code, body)
	}
	if code, _ := diagnostics(t, admin, "00000000-0000-4000-8000-000000000000", "2.48"); code != 404 {
		t.Errorf("unknown server: %d, want 404", code)
	}

	code, before := diagnostics(t, admin, srv.ID, "2.1")
	if code != 200 {
		t.Fatalf("2.1 diagnostics: %d %v", code, before)
	}
	t.Logf("2.1 diagnostics: %v", before)
	cpu0 := before["capsule_cpu_time"].(float64)
	if lim := before["capsule_memory_limit"].(float64); lim != 512<<20 {
		t.Errorf("memory limit %v, want the flavor's 512 MiB", lim)
	}
	if before["capsule_memory_usage"].(float64) <= 0 || before["memory"].(float64) != 512*1024 {
		t.Errorf("memory: usage %v, memory %v", before["capsule_memory_usage"], before["memory"])
	}
	if p, pmax := before["capsule_pids"].(float64), before["capsule_pids_max"].(float64); p < 1 || pmax < p {
		t.Errorf("pids %v of %v", p, pmax)
	}

	// ~1-3 s of CPU in busybox's sh.
	if out, err := c.docker("exec", "-d", "capsule-"+srv.ID, "sh", "-c",
		`i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done`); err != nil {
		t.Fatalf("start the CPU burner: %v %s", err, out)
	}
	deadline := time.Now().Add(60 * time.Second)
	var after map[string]any
	for {
		code, after = diagnostics(t, admin, srv.ID, "2.48")
		if code != 200 {
			t.Fatalf("2.48 diagnostics: %d %v", code, after)
		}
		cpu := after["cpu_details"].([]any)[0].(map[string]any)["time"].(float64)
		uptime, _ := after["uptime"].(float64)
		if cpu-cpu0 >= 0.5e9 && uptime >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time grew by %.2f s only while the burner ran (uptime %v)", (cpu-cpu0)/1e9, after["uptime"])
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("2.48 diagnostics: %v", after)
	if after["state"] != "running" || after["driver"] != "libvirt" || after["hypervisor"] != "docker" || after["num_cpus"] != 1.0 {
		t.Errorf("2.48 header fields: %v", after)
	}
	mem := after["memory_details"].(map[string]any)
	if mem["maximum"] != 512.0 || mem["used"] == nil || mem["used"].(float64) <= 0 || mem["used"].(float64) > 512 {
		t.Errorf("memory_details %v, want maximum 512 and some used", mem)
	}
	// Average use since the start: some, within the one vCPU.
	if u, ok := after["cpu_details"].([]any)[0].(map[string]any)["utilisation"].(float64); !ok || u <= 0 || u > 100 {
		t.Errorf("utilisation %v", after["cpu_details"])
	}
	if n := after["disk_details"].([]any)[0].(map[string]any); n["read_bytes"] == nil {
		t.Errorf("disk_details %v", n)
	}
}

// TestDiagnosticsNICs: a server's NIC counters are its veth's, seen from
// the server: what it downloads counts as received, what it sends back
// as sent, and its inbound shaping queue is reported (below 2.48).
func TestDiagnosticsNICs(t *testing.T) {
	t.Parallel()
	c := startCloud(t, withBridge)
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	shaped, plain := c.shapedPair(t, "diag", 5000, "10.78.0.0/24")

	const size = 2_000_000
	if out, err := plain.exec("sh", "-c", fmt.Sprintf("mkdir -p /tmp/w && dd if=/dev/zero of=/tmp/w/f bs=1000 count=%d 2>/dev/null && httpd -p 8080 -h /tmp/w", size/1000)); err != nil {
		t.Fatalf("serve: %v %s", err, out)
	}
	if out, err := shaped.exec("sh", "-c", fmt.Sprintf("timeout 30 wget -qO /dev/null http://%s:8080/f", plain.ip)); err != nil {
		t.Fatalf("download: %v %s", err, out)
	}

	code, body := diagnostics(t, admin, shaped.id, "2.48")
	if code != 200 {
		t.Fatalf("2.48: %d %v", code, body)
	}
	t.Logf("2.48 NICs: %v", body["nic_details"])
	nics := body["nic_details"].([]any)
	if len(nics) != 1 || body["num_nics"] != 1.0 {
		t.Fatalf("nic_details %v", nics)
	}
	n := nics[0].(map[string]any)
	if !strings.EqualFold(fmt.Sprint(n["mac_address"]), shaped.mac) {
		t.Errorf("mac %v, want %s", n["mac_address"], shaped.mac)
	}
	if rx, tx := n["rx_octets"].(float64), n["tx_octets"].(float64); rx < size || tx <= 0 || tx >= rx {
		t.Errorf("rx %v / tx %v bytes after a %d-byte download into the server", rx, tx, size)
	}
	if n["rx_packets"].(float64) <= 0 || n["tx_packets"].(float64) <= 0 {
		t.Errorf("rx_packets %v", n["rx_packets"])
	}

	code, legacy := diagnostics(t, admin, shaped.id, "2.1")
	if code != 200 {
		t.Fatalf("2.1: %d %v", code, legacy)
	}
	tap := vif.HostIfName(shaped.portID)
	if rx, _ := legacy[tap+"_rx"].(float64); rx < size {
		t.Errorf("%s_rx = %v", tap, legacy[tap+"_rx"])
	}
	if _, ok := legacy[tap+"_rx_shaping_overlimits"]; !ok {
		t.Errorf("no inbound shaping counters for %s in %v", tap, legacy)
	}
	if _, ok := legacy[tap+"_tx_shaping_overlimits"]; !ok {
		t.Errorf("no outbound shaping counters for %s in %v", tap, legacy)
	}
	// The unshaped server has no shaping counters.
	_, plainLegacy := diagnostics(t, admin, plain.id, "2.1")
	if _, ok := plainLegacy[vif.HostIfName(plain.portID)+"_rx_shaping_overlimits"]; ok || plainLegacy[vif.HostIfName(plain.portID)+"_rx"] == nil {
		t.Errorf("unshaped server reports shaping: %v", plainLegacy)
	}
}
