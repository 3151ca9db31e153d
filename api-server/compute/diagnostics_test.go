package compute

import (
	"context"
	"fmt"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/protocol"
)

// serveDiagnostics stands in for the agent of host: it answers
// diagnostics requests with reply (an error for ids in fail) and
// acknowledges every other message.
func (f *fixture) serveDiagnostics(host string, reply protocol.DiagnosticsReply, fail map[string]error) {
	f.t.Helper()
	h := func(_ context.Context, m bus.Message) (any, error) {
		if m.Kind != protocol.KindDiagnostics {
			return nil, nil
		}
		var req protocol.DiagnosticsRequest
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		if err, ok := fail[req.InstanceID]; ok {
			return nil, err
		}
		return reply, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.t.Cleanup(cancel)
	if err := f.bus.Consume(ctx, bus.ComputeQueue(host), h); err != nil {
		f.t.Fatal(err)
	}
}

// runningReply is what an agent measures on a running server with one NIC.
func runningReply() protocol.DiagnosticsReply {
	return protocol.DiagnosticsReply{
		PowerState: 1, Running: true, UptimeSeconds: 10, Driver: "docker", CgroupVersion: 1,
		CPUTimeNS: 5_000_000_001, CPUThrottledNS: 7, CPUThrottledPeriods: 3, CPUPeriods: 100,
		MemoryUsageBytes: 12 << 20, MemoryLimitBytes: 256 << 20, MemoryRSSBytes: 8 << 20, MemoryCacheBytes: 4 << 20, OOMKills: 1,
		PidsCurrent: 2, PidsMax: 1024, DiskReadBytes: 4096, DiskWriteBytes: 8192, DiskReadOps: 1, DiskWriteOps: 2,
		NICs: []protocol.NICDiagnostics{{PortID: "3f2a1c9e-7b4d", MAC: "FA:16:3E:00:00:01", Interface: "tap3f2a1c9e-7b", Present: true,
			RxBytes: 100, RxPackets: 2, TxBytes: 300, TxPackets: 4, RxDrops: 5, InboundShaped: true, InboundDrops: 6, InboundOverlimits: 9, OutboundShaped: true, OutboundOverlimits: 11}},
	}
}

func TestDiagnosticsRendering(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "diag")
	f.activate(id, "h1")
	gone := f.create("demo", "gone")
	f.activate(gone, "h1")
	unmeasured := f.create("demo", "unmeasured")
	f.activate(unmeasured, "h1")
	f.serveDiagnostics("h1", runningReply(), map[string]error{
		gone:       fmt.Errorf("diagnostics of instance %s: %w", gone, drivers.ErrNotFound),
		unmeasured: fmt.Errorf("diagnostics of instance %s: driver fake cannot measure instances: %w", unmeasured, drivers.ErrNotSupported),
	})
	path := "/v2.1/servers/" + id + "/diagnostics"

	resp, body := f.do("GET", path, "admin", "", "X-OpenStack-Nova-API-Version", "2.47")
	if resp.StatusCode != 200 {
		t.Fatalf("2.47: %d %v", resp.StatusCode, body)
	}
	for k, want := range map[string]float64{
		"cpu0_time": 5_000_000_001, "memory": 128 * 1024, "memory-actual": 256 * 1024, "memory-rss": 8 * 1024,
		"vda_read": 4096, "vda_write": 8192, "vda_read_req": 1, "vda_write_req": 2,
		"tap3f2a1c9e-7b_rx": 100, "tap3f2a1c9e-7b_tx": 300, "tap3f2a1c9e-7b_rx_packets": 2, "tap3f2a1c9e-7b_rx_drop": 5,
		"tap3f2a1c9e-7b_rx_shaping_drop": 6, "tap3f2a1c9e-7b_rx_shaping_overlimits": 9, "tap3f2a1c9e-7b_tx_shaping_overlimits": 11,
		"capsule_cpu_throttled_time": 7, "capsule_cpu_throttled_periods": 3, "capsule_oom_kills": 1, "capsule_pids": 2,
		"capsule_pids_max": 1024, "capsule_memory_limit": 256 << 20, "capsule_memory_usage": 12 << 20,
	} {
		if body[k] != want {
			t.Errorf("2.47 %s = %v, want %v", k, body[k], want)
		}
	}

	resp, body = f.do("GET", path, "admin", "", "X-OpenStack-Nova-API-Version", "2.48")
	if resp.StatusCode != 200 {
		t.Fatalf("2.48: %d %v", resp.StatusCode, body)
	}
	if body["state"] != "running" || body["driver"] != "libvirt" || body["uptime"] != 10.0 || body["num_cpus"] != 1.0 || body["num_nics"] != 1.0 {
		t.Errorf("2.48 = %v", body)
	}
	if m := body["memory_details"].(map[string]any); m["maximum"] != 256.0 || m["used"] != 12.0 {
		t.Errorf("memory_details = %v", m)
	}
	if c := body["cpu_details"].([]any)[0].(map[string]any); c["time"] != 5_000_000_001.0 || c["utilisation"] != 50.0 {
		t.Errorf("cpu_details = %v", c)
	}
	if n := body["nic_details"].([]any)[0].(map[string]any); n["mac_address"] != "fa:16:3e:00:00:01" || n["rx_octets"] != 100.0 || n["tx_packets"] != 4.0 {
		t.Errorf("nic_details = %v", n)
	}
	if d := body["disk_details"].([]any)[0].(map[string]any); d["write_bytes"] != 8192.0 || d["read_requests"] != 1.0 {
		t.Errorf("disk_details = %v", d)
	}

	resp, body = f.do("GET", path, "demo", "")
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("GET", "/v2.1/servers/11111111-0000-4000-8000-000000000000/diagnostics", "admin", "")
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("GET", "/v2.1/servers/"+gone+"/diagnostics", "admin", "")
	expectFault(t, resp, body, 409, "conflictingRequest")
	// A driver that cannot measure: its NotSupported crosses the bus.
	resp, body = f.do("GET", "/v2.1/servers/"+unmeasured+"/diagnostics", "admin", "")
	expectFault(t, resp, body, 501, "notImplemented")
	if msg := body["notImplemented"].(map[string]any)["message"]; msg != "Unable to get diagnostics, functionality not implemented: diagnostics of instance "+
		unmeasured+": driver fake cannot measure instances: not supported by this driver" {
		t.Errorf("not-implemented message %q", msg)
	}
	building := f.create("demo", "building")
	resp, body = f.do("GET", "/v2.1/servers/"+building+"/diagnostics", "admin", "")
	expectFault(t, resp, body, 409, "conflictingRequest")
}

// A host whose agent does not answer: 503 after the call timeout.
func TestDiagnosticsHostDown(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "diag")
	f.activate(id, "h-down")
	resp, body := f.do("GET", "/v2.1/servers/"+id+"/diagnostics", "admin", "")
	if resp.StatusCode != 503 {
		t.Fatalf("status %d %v", resp.StatusCode, body)
	}
}

// The 2.48 body of a stopped server (no counters) and of a running one
// with NICs both satisfy Tempest's schema.
func TestDiagnosticsSchema(t *testing.T) {
	ts := loadTempestSchemas(t)
	f := newFixture(t)
	id := f.create("demo", "diag")
	f.activate(id, "h1")
	f.serveDiagnostics("h1", runningReply(), nil)
	for _, v := range []apiVersion{{2, 1}, {2, 47}, {2, 48}, {2, 60}} {
		f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/servers/" + id + "/diagnostics", "", "servers", "show_server_diagnostics"})
	}
	f2 := newFixture(t)
	id2 := f2.create("demo", "stopped")
	f2.activate(id2, "h1")
	f2.serveDiagnostics("h1", protocol.DiagnosticsReply{PowerState: 4, Driver: "docker",
		NICs: []protocol.NICDiagnostics{{PortID: "p", MAC: "fa:16:3e:00:00:02", Interface: "tapp"}}}, nil)
	body := f2.check(t, ts, apiVersion{2, 48}, contractCall{"admin", "GET", "/v2.1/servers/" + id2 + "/diagnostics", "", "servers", "show_server_diagnostics"})
	if body["state"] != "shutdown" || body["uptime"] != nil {
		t.Errorf("stopped = %v", body)
	}
}
