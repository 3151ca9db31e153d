// Package metrics exposes a compute host's figures in the Prometheus
// format: per server (cgroup CPU, memory, OOM kills, pids, disk, NICs and
// their shaping drops) and per host (pids against pid_max, conntrack
// entries against their max, dockerd and Open vSwitch health, running
// servers). Figures are read at scrape time from a Source, so nothing is
// cached between scrapes and nothing lives at package level: each agent
// registers its own Collector on its own prometheus.Registry.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/capsule-cloud/capsule/cgroup"
)

// Server is one server's figures at scrape time.
type Server struct {
	ID      string // instance UUID
	Project string // owning project id ("" when unknown)
	// Stats are the cgroup counters; HasStats is false while the workload
	// does not run (or the driver cannot measure it). A working set of 0
	// is one the driver cannot tell: its series is then not exported.
	Stats    cgroup.Stats
	HasStats bool
	NICs     []NIC
}

// NIC is one server NIC's counters, from the server's point of view (rx is
// what the server received).
type NIC struct {
	PortID    string
	Interface string // host-side veth
	RxBytes   uint64
	TxBytes   uint64
	RxDrops   uint64
	TxDrops   uint64
	// Shaped says a tc HTB shapes the NIC; TCDrops counts the packets it
	// dropped, both directions.
	Shaped  bool
	TCDrops uint64
}

// Host is the host's figures at scrape time. Absent figures (Has* false,
// nil) are not exported at all rather than exported as 0, so an alarm on
// "conntrack near max" does not fire on a host without conntrack.
type Host struct {
	PidsInUse, PidMax            uint64
	HasPids                      bool
	ConntrackCount, ConntrackMax uint64
	HasConntrack                 bool
	DockerUp                     bool
	OVSUp                        *bool // nil: no Open vSwitch configured on this host
	RunningServers               int
}

// Source gives the figures of one scrape; ctx bounds it.
type Source interface {
	Servers(ctx context.Context) ([]Server, error)
	Host(ctx context.Context) Host
}

// NewRegistry returns a registry holding a Collector for host reading src
// (each scrape bounded by timeout) and the Go runtime and process
// collectors of the agent itself.
func NewRegistry(host string, src Source, timeout time.Duration, log *slog.Logger) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(host, src, timeout, log),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg's metrics (the /metrics endpoint).
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// Mux serves reg's metrics at /metrics.
func Mux(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(reg))
	return mux
}

// Serve serves srv (built with its timeouts and limits by the caller,
// its handler usually Mux) until ctx ends. It returns the listen error,
// or nil once stopped.
func Serve(ctx context.Context, srv *http.Server, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ListenAndServeTLS("", "")
			return
		}
		errc <- srv.ListenAndServe()
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("metrics: shutdown", "err", err)
		}
		return nil
	}
}
