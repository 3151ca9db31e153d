package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/vif"
)

func (e *env) diagnostics(id string) (protocol.DiagnosticsReply, error) {
	e.t.Helper()
	m, err := bus.NewMessage(protocol.KindDiagnostics, protocol.DiagnosticsRequest{InstanceID: id})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var reply protocol.DiagnosticsReply
	err = e.bus.Call(ctx, bus.ComputeQueue(testHost), m, &reply)
	return reply, err
}

// A running server's counters come from the driver's StatsReader and its
// NICs from the agent's memory (their veths do not exist here, so they
// are absent); a stopped one has its state and no counters; an unknown
// one is an error the caller sees.
func TestDiagnosticsFromDriverAndNICs(t *testing.T) {
	e, drv, _ := startNet(t)
	e.buildNet("i-dg", "req-dg")
	if r := e.waitReport("i-dg", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	time.Sleep(20 * time.Millisecond) // some synthetic CPU time
	rep, err := e.diagnostics("i-dg")
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Running || rep.PowerState != int(drivers.PowerRunning) || rep.Driver != "fake" {
		t.Errorf("state = %+v", rep)
	}
	if rep.CPUTimeNS == 0 || rep.MemoryLimitBytes != 64<<20 || rep.MemoryUsageBytes == 0 || rep.PidsCurrent != 1 ||
		rep.PidsMax != uint64(testConfig().PidsLimit) || rep.CgroupVersion != 2 || rep.MemoryRSSBytes == 0 {
		t.Errorf("counters = %+v", rep)
	}
	if len(rep.NICs) != 2 || rep.NICs[0].PortID != "port-a" || rep.NICs[0].MAC != "fa:16:3e:00:00:01" ||
		rep.NICs[1].Interface != vif.HostIfName("port-b") || rep.NICs[0].Present {
		t.Errorf("NICs = %+v", rep.NICs)
	}
	if drv.Calls("stats") != 1 {
		t.Errorf("stats calls = %d", drv.Calls("stats"))
	}

	e.action("i-dg", "req-dg-stop", lifecycle.ActStop)
	if r := e.waitReport("i-dg", 2, 5*time.Second); !r.OK {
		t.Fatalf("stop: %+v", r)
	}
	rep, err = e.diagnostics("i-dg")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Running || rep.PowerState != int(drivers.PowerShutdown) || rep.CPUTimeNS != 0 || rep.UptimeSeconds != 0 || len(rep.NICs) != 2 {
		t.Errorf("stopped server's diagnostics = %+v", rep)
	}

	_, err = e.diagnostics("i-nope")
	var re *bus.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "not found") {
		t.Errorf("unknown instance: %v", err)
	}
}

// The host-side counters of a real link: the loopback, which receives
// what it sends, so both directions count and nothing shapes it.
func TestLinkDiagnostics(t *testing.T) {
	d := protocol.NICDiagnostics{Interface: "lo"}
	if err := linkDiagnostics(&d); err != nil {
		t.Fatal(err)
	}
	if !d.Present || d.InboundShaped {
		t.Errorf("lo = %+v", d)
	}
	n, err := nicDiagnostics(protocol.NIC{PortID: "no-such-port-here", MAC: "fa:16:3e:00:00:09"})
	if err != nil || n.Present || n.MAC != "fa:16:3e:00:00:09" || n.Interface != vif.HostIfName("no-such-port-here") {
		t.Errorf("missing veth = %+v, %v", n, err)
	}
}
