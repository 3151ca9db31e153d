package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const ns = "capsule"

var (
	serverLabels = []string{"instance", "project", "host"}
	nicLabels    = []string{"instance", "project", "host", "port", "interface"}
	hostLabels   = []string{"host"}
)

func desc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
}

// Collector reads a Source at each scrape.
type Collector struct {
	host    string
	src     Source
	timeout time.Duration
	log     *slog.Logger

	cpuSeconds, cpuThrottledSeconds, cpuPeriods, cpuThrottledPeriods *prometheus.Desc
	memUsage, memCache, memRSS, memLimit, oomKills, memWorkingSet    *prometheus.Desc
	pids, pidsMax                                                    *prometheus.Desc
	diskReadBytes, diskWriteBytes, diskReadOps, diskWriteOps         *prometheus.Desc
	nicRxBytes, nicTxBytes, nicRxDrops, nicTxDrops, tcDrops          *prometheus.Desc

	hostPids, hostPidMax, conntrack, conntrackMax *prometheus.Desc
	dockerUp, ovsUp, running, scrapeErrors        *prometheus.Desc
}

// NewCollector returns a collector of host's figures read from src.
func NewCollector(host string, src Source, timeout time.Duration, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.Default()
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	s := serverLabels
	return &Collector{
		host: host, src: src, timeout: timeout, log: log,

		cpuSeconds:          desc("server_cpu_usage_seconds_total", "CPU time used by the server's cgroup.", s),
		cpuThrottledSeconds: desc("server_cpu_throttled_seconds_total", "Time the server's cgroup was throttled by its CPU quota.", s),
		cpuPeriods:          desc("server_cpu_periods_total", "CFS enforcement periods elapsed for the server.", s),
		cpuThrottledPeriods: desc("server_cpu_throttled_periods_total", "CFS periods in which the server was throttled.", s),
		memUsage: desc("server_memory_usage_bytes",
			"Memory charged to the server's cgroup, page cache included (what the OOM killer compares to the limit).", s),
		memCache: desc("server_memory_cache_bytes", "Page cache charged to the server's cgroup (tmpfs files included).", s),
		memWorkingSet: desc("server_memory_working_set_bytes",
			"Memory the server uses that the kernel cannot simply reclaim: usage minus inactive page cache (what memory alarms compare to the limit).", s),
		memRSS:         desc("server_memory_rss_bytes", "Anonymous memory of the server.", s),
		memLimit:       desc("server_memory_limit_bytes", "Memory limit of the server (absent when unlimited).", s),
		oomKills:       desc("server_oom_kills_total", "Processes of the server killed by the OOM killer.", s),
		pids:           desc("server_pids", "Tasks (processes and threads) in the server.", s),
		pidsMax:        desc("server_pids_max", "Task limit of the server (absent when unlimited).", s),
		diskReadBytes:  desc("server_disk_read_bytes_total", "Bytes the server read from block devices.", s),
		diskWriteBytes: desc("server_disk_write_bytes_total", "Bytes the server wrote to block devices.", s),
		diskReadOps:    desc("server_disk_read_ops_total", "Block read operations of the server.", s),
		diskWriteOps:   desc("server_disk_write_ops_total", "Block write operations of the server.", s),
		nicRxBytes:     desc("server_nic_receive_bytes_total", "Bytes the server received on the NIC.", nicLabels),
		nicTxBytes:     desc("server_nic_transmit_bytes_total", "Bytes the server sent on the NIC.", nicLabels),
		nicRxDrops:     desc("server_nic_receive_drops_total", "Packets to the server dropped on the NIC's veth.", nicLabels),
		nicTxDrops:     desc("server_nic_transmit_drops_total", "Packets from the server dropped on the NIC's veth.", nicLabels),
		tcDrops:        desc("server_nic_tc_drops_total", "Packets dropped by the NIC's tc shaping (absent when not shaped).", nicLabels),

		hostPids:     desc("host_pids", "Tasks on the host.", hostLabels),
		hostPidMax:   desc("host_pid_max", "kernel.pid_max of the host.", hostLabels),
		conntrack:    desc("host_conntrack_entries", "Connection tracking entries (absent without nf_conntrack).", hostLabels),
		conntrackMax: desc("host_conntrack_entries_max", "Connection tracking table size (absent without nf_conntrack).", hostLabels),
		dockerUp:     desc("host_docker_up", "1 when the container runtime answers.", hostLabels),
		ovsUp:        desc("host_ovs_up", "1 when Open vSwitch answers (absent when the host has no OVS plumbing).", hostLabels),
		running:      desc("host_running_servers", "Servers whose workload runs on the host.", hostLabels),
		scrapeErrors: desc("host_scrape_error", "1 when the servers' figures could not be listed in this scrape.", hostLabels),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.cpuSeconds, c.cpuThrottledSeconds, c.cpuPeriods, c.cpuThrottledPeriods,
		c.memUsage, c.memCache, c.memRSS, c.memLimit, c.oomKills, c.memWorkingSet, c.pids, c.pidsMax,
		c.diskReadBytes, c.diskWriteBytes, c.diskReadOps, c.diskWriteOps,
		c.nicRxBytes, c.nicTxBytes, c.nicRxDrops, c.nicTxDrops, c.tcDrops,
		c.hostPids, c.hostPidMax, c.conntrack, c.conntrackMax, c.dockerUp, c.ovsUp, c.running, c.scrapeErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one read of the Source.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	servers, err := c.src.Servers(ctx)
	scrapeErr := 0.0
	if err != nil {
		// Host figures are still worth exporting; the error is a series
		// of its own so a scrape never fails as a whole.
		c.log.Warn("metrics: servers not listed", "err", err)
		scrapeErr = 1
	}
	for _, s := range servers {
		c.collectServer(ch, s)
	}
	h := c.src.Host(ctx)
	g := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, c.host)
	}
	if h.HasPids {
		g(c.hostPids, float64(h.PidsInUse))
		g(c.hostPidMax, float64(h.PidMax))
	}
	if h.HasConntrack {
		g(c.conntrack, float64(h.ConntrackCount))
		g(c.conntrackMax, float64(h.ConntrackMax))
	}
	g(c.dockerUp, b2f(h.DockerUp))
	if h.OVSUp != nil {
		g(c.ovsUp, b2f(*h.OVSUp))
	}
	g(c.running, float64(h.RunningServers))
	g(c.scrapeErrors, scrapeErr)
}

func (c *Collector) collectServer(ch chan<- prometheus.Metric, s Server) {
	lv := []string{s.ID, s.Project, c.host}
	if s.HasStats {
		st := s.Stats
		counter := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
		}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
		}
		counter(c.cpuSeconds, float64(st.CPUUsageNS)/1e9)
		counter(c.cpuThrottledSeconds, float64(st.CPUThrottledNS)/1e9)
		counter(c.cpuPeriods, float64(st.CPUPeriods))
		counter(c.cpuThrottledPeriods, float64(st.CPUThrottledPeriods))
		gauge(c.memUsage, float64(st.MemoryUsageBytes))
		gauge(c.memCache, float64(st.MemoryCacheBytes))
		gauge(c.memRSS, float64(st.MemoryRSSBytes))
		if st.MemoryWorkingSetBytes > 0 {
			gauge(c.memWorkingSet, float64(st.MemoryWorkingSetBytes))
		}
		if st.MemoryLimitBytes > 0 {
			gauge(c.memLimit, float64(st.MemoryLimitBytes))
		}
		counter(c.oomKills, float64(st.OOMKills))
		gauge(c.pids, float64(st.Pids))
		if st.PidsLimit > 0 {
			gauge(c.pidsMax, float64(st.PidsLimit))
		}
		counter(c.diskReadBytes, float64(st.DiskReadBytes))
		counter(c.diskWriteBytes, float64(st.DiskWriteBytes))
		counter(c.diskReadOps, float64(st.DiskReadOps))
		counter(c.diskWriteOps, float64(st.DiskWriteOps))
	}
	for _, n := range s.NICs {
		nl := []string{s.ID, s.Project, c.host, n.PortID, n.Interface}
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), nl...)
		}
		counter(c.nicRxBytes, n.RxBytes)
		counter(c.nicTxBytes, n.TxBytes)
		counter(c.nicRxDrops, n.RxDrops)
		counter(c.nicTxDrops, n.TxDrops)
		if n.Shaped {
			counter(c.tcDrops, n.TCDrops)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
