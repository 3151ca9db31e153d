package metrics

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/metrics/metricstest"
)

type staticSource struct {
	servers []Server
	err     error
	host    Host
}

func (s staticSource) Servers(context.Context) ([]Server, error) { return s.servers, s.err }
func (s staticSource) Host(context.Context) Host                 { return s.host }

func TestCollectorSeries(t *testing.T) {
	up := false
	src := staticSource{
		servers: []Server{{
			ID: "i-1", Project: "p-1", HasStats: true,
			Stats: cgroup.Stats{CPUUsageNS: 2_500_000_000, CPUThrottledNS: 1_000_000_000, CPUPeriods: 40,
				CPUThrottledPeriods: 4, MemoryUsageBytes: 100 << 20, MemoryCacheBytes: 60 << 20, MemoryRSSBytes: 40 << 20,
				MemoryLimitBytes: 512 << 20, OOMKills: 2, Pids: 7, PidsLimit: 100,
				DiskReadBytes: 4096, DiskWriteBytes: 8192, DiskReadOps: 1, DiskWriteOps: 2, MemoryWorkingSetBytes: 55 << 20},
			NICs: []NIC{{PortID: "port-a", Interface: "tap-a", RxBytes: 10, TxBytes: 20, RxDrops: 1, TxDrops: 2, Shaped: true, TCDrops: 5},
				{PortID: "port-b", Interface: "tap-b", RxBytes: 3}},
		}, {ID: "i-2", Project: "p-2"}}, // stopped: no cgroup series
		host: Host{PidsInUse: 300, PidMax: 4194304, HasPids: true, DockerUp: true, OVSUp: &up, RunningServers: 1},
	}
	got := metricstest.Scrape(t, Handler(NewRegistry("h1", src, time.Second, nil)))
	srv := `{host="h1",instance="i-1",project="p-1"}`
	want := map[string]float64{
		"capsule_server_cpu_usage_seconds_total" + srv:     2.5,
		"capsule_server_cpu_throttled_seconds_total" + srv: 1,
		"capsule_server_cpu_periods_total" + srv:           40,
		"capsule_server_cpu_throttled_periods_total" + srv: 4,
		"capsule_server_memory_usage_bytes" + srv:          100 << 20,
		"capsule_server_memory_cache_bytes" + srv:          60 << 20,
		"capsule_server_memory_rss_bytes" + srv:            40 << 20,
		"capsule_server_memory_working_set_bytes" + srv:    55 << 20,
		"capsule_server_memory_limit_bytes" + srv:          512 << 20,
		"capsule_server_oom_kills_total" + srv:             2,
		"capsule_server_pids" + srv:                        7,
		"capsule_server_pids_max" + srv:                    100,
		"capsule_server_disk_read_bytes_total" + srv:       4096,
		"capsule_server_disk_write_bytes_total" + srv:      8192,
		"capsule_server_disk_read_ops_total" + srv:         1,
		"capsule_server_disk_write_ops_total" + srv:        2,
		`capsule_server_nic_receive_bytes_total{host="h1",instance="i-1",interface="tap-a",port="port-a",project="p-1"}`:  10,
		`capsule_server_nic_transmit_bytes_total{host="h1",instance="i-1",interface="tap-a",port="port-a",project="p-1"}`: 20,
		`capsule_server_nic_receive_drops_total{host="h1",instance="i-1",interface="tap-a",port="port-a",project="p-1"}`:  1,
		`capsule_server_nic_transmit_drops_total{host="h1",instance="i-1",interface="tap-a",port="port-a",project="p-1"}`: 2,
		`capsule_server_nic_tc_drops_total{host="h1",instance="i-1",interface="tap-a",port="port-a",project="p-1"}`:       5,
		`capsule_server_nic_receive_bytes_total{host="h1",instance="i-1",interface="tap-b",port="port-b",project="p-1"}`:  3,
		`capsule_host_pids{host="h1"}`:            300,
		`capsule_host_pid_max{host="h1"}`:         4194304,
		`capsule_host_docker_up{host="h1"}`:       1,
		`capsule_host_ovs_up{host="h1"}`:          0,
		`capsule_host_running_servers{host="h1"}`: 1,
		`capsule_host_scrape_error{host="h1"}`:    0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	for k := range got {
		if strings.Contains(k, `instance="i-2"`) || strings.HasPrefix(k, "capsule_host_conntrack") ||
			strings.HasPrefix(k, `capsule_server_nic_tc_drops_total{host="h1",instance="i-1",interface="tap-b"`) {
			t.Errorf("unexpected series %s", k)
		}
	}
}

// A failed listing still exports the host's figures, flagged; an absent
// OVS is not exported.
func TestCollectorServersError(t *testing.T) {
	src := staticSource{err: errors.New("dockerd down"), host: Host{HasConntrack: true, ConntrackCount: 5, ConntrackMax: 10}}
	got := metricstest.Scrape(t, Handler(NewRegistry("h2", src, time.Second, nil)))
	if got[`capsule_host_scrape_error{host="h2"}`] != 1 || got[`capsule_host_docker_up{host="h2"}`] != 0 ||
		got[`capsule_host_conntrack_entries{host="h2"}`] != 5 || got[`capsule_host_conntrack_entries_max{host="h2"}`] != 10 {
		t.Errorf("series = %v", got)
	}
	if _, ok := got[`capsule_host_ovs_up{host="h2"}`]; ok {
		t.Error("ovs_up exported without OVS")
	}
}

func TestHostFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("loadavg", "0.20 0.18 0.12 2/812 11206\n")
	write("sys/kernel/pid_max", "32768\n")
	n, m, err := HostPids(dir)
	if err != nil || n != 812 || m != 32768 {
		t.Errorf("HostPids = %d, %d, %v", n, m, err)
	}
	if _, _, ok, err := Conntrack(dir); ok || err != nil {
		t.Errorf("conntrack without nf_conntrack: ok=%v err=%v", ok, err)
	}
	write("sys/net/netfilter/nf_conntrack_count", "17\n")
	write("sys/net/netfilter/nf_conntrack_max", "262144\n")
	if c, m, ok, err := Conntrack(dir); !ok || err != nil || c != 17 || m != 262144 {
		t.Errorf("Conntrack = %d, %d, %v, %v", c, m, ok, err)
	}
	// The real host's, whatever they are, parse.
	if n, m, err := HostPids("/proc"); err != nil || n == 0 || m == 0 {
		t.Errorf("HostPids(/proc) = %d, %d, %v", n, m, err)
	}
	if _, _, _, err := Conntrack("/proc"); err != nil {
		t.Errorf("Conntrack(/proc): %v", err)
	}
}
