package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

func hostReport(host string) protocol.HostReport {
	return protocol.HostReport{Host: host, HostIP: "10.0.0.7", HypervisorType: "docker", HypervisorVersion: 20010,
		VCPUs: 8, MemoryMB: 16384, DiskGB: 200, CPUModel: "Xeon", Arch: "x86_64", RunningVMs: 2,
		CPUAllocationRatio: 4, RAMAllocationRatio: 1.5, DiskAllocationRatio: 1, ReservedMemoryMB: 512, At: testNow}
}

func computeServices(t *testing.T, st *store.Store) []store.Service {
	t.Helper()
	var svcs []store.Service
	if err := st.DB.Where("binary_name = ?", store.ComputeBinary).Order("host").Find(&svcs).Error; err != nil {
		t.Fatal(err)
	}
	return svcs
}

func TestHostReportRegistersThenUpdates(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		b := bus.NewMem()
		c := newTestConductor(st, b, 3)

		mustSend(t, c, protocol.KindHostReport, hostReport("h1"))
		svcs := computeServices(t, st)
		if len(svcs) != 1 {
			t.Fatalf("%d compute services after the first report, want 1", len(svcs))
		}
		s := svcs[0]
		if s.Host != "h1" || s.Zone != "nova" || s.UUID == "" || s.Disabled || s.ForcedDown {
			t.Errorf("registered service = %+v, want h1 in zone nova, enabled", s)
		}
		if s.VCPUs != 8 || s.MemoryMB != 16384 || s.DiskGB != 200 || s.RunningVMs != 2 || s.HostIP != "10.0.0.7" ||
			s.HypervisorType != "docker" || s.HypervisorVersion != 20010 || s.CPUAllocationRatio != 4 ||
			s.RAMAllocationRatio != 1.5 || s.DiskAllocationRatio != 1 || s.ReservedMemoryMB != 512 {
			t.Errorf("capacity not recorded: %+v", s)
		}
		if s.LastHeartbeat == nil || !s.LastHeartbeat.Equal(testNow) {
			t.Errorf("last_heartbeat = %v, want %v", s.LastHeartbeat, testNow)
		}
		var cpu struct {
			Arch     string         `json:"arch"`
			Model    string         `json:"model"`
			Topology map[string]int `json:"topology"`
		}
		if err := json.Unmarshal([]byte(s.CPUInfo), &cpu); err != nil {
			t.Fatalf("cpu_info %q is not JSON: %v", s.CPUInfo, err)
		}
		if cpu.Arch != "x86_64" || cpu.Model != "Xeon" || cpu.Topology["cores"] != 8 {
			t.Errorf("cpu_info = %+v", cpu)
		}

		// A later heartbeat updates the same row.
		later := testNow.Add(time.Minute)
		c.now = func() time.Time { return later }
		r := hostReport("h1")
		r.VCPUs, r.MemoryMB, r.RunningVMs, r.CPUAllocationRatio = 16, 32768, 5, 2
		mustSend(t, c, protocol.KindHostReport, r)
		mustSend(t, c, protocol.KindHostReport, r) // redelivered: same outcome
		svcs = computeServices(t, st)
		if len(svcs) != 1 {
			t.Fatalf("%d compute services after heartbeats, want 1", len(svcs))
		}
		u := svcs[0]
		if u.ID != s.ID || u.UUID != s.UUID {
			t.Errorf("heartbeat re-registered the host: %s/%d → %s/%d", s.UUID, s.ID, u.UUID, u.ID)
		}
		if u.VCPUs != 16 || u.MemoryMB != 32768 || u.RunningVMs != 5 || u.CPUAllocationRatio != 2 {
			t.Errorf("capacity not updated: %+v", u)
		}
		if u.LastHeartbeat == nil || !u.LastHeartbeat.Equal(later) {
			t.Errorf("last_heartbeat = %v, want %v", u.LastHeartbeat, later)
		}

		// Another host with its own zone registers separately; an empty
		// host name is ignored.
		r2 := hostReport("h2")
		r2.Zone = "az2"
		mustSend(t, c, protocol.KindHostReport, r2)
		mustSend(t, c, protocol.KindHostReport, protocol.HostReport{VCPUs: 1})
		svcs = computeServices(t, st)
		if len(svcs) != 2 || svcs[1].Host != "h2" || svcs[1].Zone != "az2" {
			t.Errorf("services = %+v, want h1 and h2 (zone az2)", svcs)
		}
	})
}

// TestHostReportKeepsOperatorFields: a heartbeat must not undo what an
// operator set on the service (disabled, forced down).
func TestHostReportKeepsOperatorFields(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	mustSend(t, c, protocol.KindHostReport, hostReport("h1"))
	reason := "maintenance"
	if err := st.DB.Model(&store.Service{}).Where("host = ?", "h1").
		Updates(map[string]any{"disabled": true, "disabled_reason": reason, "forced_down": true}).Error; err != nil {
		t.Fatal(err)
	}
	mustSend(t, c, protocol.KindHostReport, hostReport("h1"))
	s := computeServices(t, st)[0]
	if !s.Disabled || s.DisabledReason == nil || *s.DisabledReason != reason || !s.ForcedDown {
		t.Errorf("heartbeat reset operator fields: %+v", s)
	}
}

func TestBuildReportOK(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		b := bus.NewMem()
		c := newTestConductor(st, b, 3)
		addHost(t, st, "h1")
		inst := addInstance(t, st, onHost("h1"))
		addClaim(t, st, inst.ID, "h1")
		addAction(t, st, inst.ID, "create", "req-1")

		mustSend(t, c, protocol.KindInstanceReport, report(inst, "h1", lifecycle.ActCreate, "req-1", true))

		got := loadInst(t, st, inst.ID)
		if got.VMState != lifecycle.Active || got.TaskState != "" || got.PowerState != int(lifecycle.Running) {
			t.Errorf("state = %s/%q/%d, want active/none/running", got.VMState, got.TaskState, got.PowerState)
		}
		if got.LaunchedAt == nil || !got.LaunchedAt.Equal(testNow) {
			t.Errorf("launched_at = %v, want %v", got.LaunchedAt, testNow)
		}
		if got.Host != "h1" || got.FaultMessage != "" {
			t.Errorf("host %q fault %q", got.Host, got.FaultMessage)
		}
		if h := claimHosts(t, st, inst.ID); !slices.Equal(h, []string{"h1"}) {
			t.Errorf("claims on %v, want the build's claim on h1 kept", h)
		}
		evs := eventsOf(t, st, inst.ID, "req-1")
		if len(evs) != 1 {
			t.Fatalf("%d events, want 1", len(evs))
		}
		if e := evs[0]; e.Event != "compute_create" || e.Result != "Success" || e.Host != "h1" || e.FinishTime == nil {
			t.Errorf("event = %+v, want a Success compute_create on h1", e)
		}
		if s := b.Sent(bus.SchedulerQueue); len(s) != 0 {
			t.Errorf("a successful build sent %d scheduler messages", len(s))
		}
	})
}

func TestBuildReportFailureReschedules(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		b := bus.NewMem()
		c := newTestConductor(st, b, 3)
		addHost(t, st, "h1")
		addHost(t, st, "h2")
		inst := addInstance(t, st, onHost("h1"))
		addClaim(t, st, inst.ID, "h1")
		other := addInstance(t, st, onHost("h1"))
		addClaim(t, st, other.ID, "h1")
		addAction(t, st, inst.ID, "create", "req-1")

		mustSend(t, c, protocol.KindInstanceReport, report(inst, "h1", lifecycle.ActCreate, "req-1", false))

		got := loadInst(t, st, inst.ID)
		if got.VMState != lifecycle.Building || got.TaskState != lifecycle.Scheduling || got.Host != "" {
			t.Errorf("after a failed attempt: %s/%q on %q, want building/scheduling on no host", got.VMState, got.TaskState, got.Host)
		}
		if got.TriedHosts != "h1" || got.BuildAttempts != 2 || got.FaultMessage != "" {
			t.Errorf("tried_hosts %q build_attempts %d fault %q", got.TriedHosts, got.BuildAttempts, got.FaultMessage)
		}
		if h := claimHosts(t, st, inst.ID); len(h) != 0 {
			t.Errorf("claims on %v, want the failed host's claim released", h)
		}
		if h := claimHosts(t, st, other.ID); !slices.Equal(h, []string{"h1"}) {
			t.Errorf("another instance's claim was touched: %v", h)
		}
		reqs := scheduleRequests(t, b)
		want := protocol.ScheduleInstance{InstanceID: inst.ID, RequestID: "req-1", Attempt: 2, Excluded: []string{"h1"}}
		if len(reqs) != 1 || !sameSchedule(reqs[0], want) {
			t.Fatalf("scheduler got %+v, want [%+v]", reqs, want)
		}
		evs := eventsOf(t, st, inst.ID, "req-1")
		if len(evs) != 1 || evs[0].Result != "Error" || !strings.Contains(evs[0].Traceback, "boom") {
			t.Errorf("events = %+v, want one Error event with the agent's error", evs)
		}

		// The scheduler places attempt 2 on h2, which fails too.
		if err := st.DB.Model(&store.Instance{}).Where("id = ?", inst.ID).
			Updates(map[string]any{"host": "h2", "task_state": string(lifecycle.Spawning)}).Error; err != nil {
			t.Fatal(err)
		}
		addClaim(t, st, inst.ID, "h2")
		inst = loadInst(t, st, inst.ID)
		mustSend(t, c, protocol.KindInstanceReport, report(inst, "h2", lifecycle.ActCreate, "req-1", false))

		got = loadInst(t, st, inst.ID)
		if got.TaskState != lifecycle.Scheduling || got.TriedHosts != "h1,h2" || got.BuildAttempts != 3 {
			t.Errorf("after attempt 2: task %q tried %q attempts %d", got.TaskState, got.TriedHosts, got.BuildAttempts)
		}
		reqs = scheduleRequests(t, b)
		want = protocol.ScheduleInstance{InstanceID: inst.ID, RequestID: "req-1", Attempt: 3, Excluded: []string{"h1", "h2"}}
		if len(reqs) != 2 || !sameSchedule(reqs[1], want) {
			t.Fatalf("scheduler got %+v, want a second request %+v", reqs, want)
		}
	})
}

func sameSchedule(a, b protocol.ScheduleInstance) bool {
	return a.InstanceID == b.InstanceID && a.RequestID == b.RequestID && a.Attempt == b.Attempt && slices.Equal(a.Excluded, b.Excluded)
}

func TestBuildReportFailureLastAttempt(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		b := bus.NewMem()
		c := newTestConductor(st, b, 2)
		addHost(t, st, "h1")
		inst := addInstance(t, st, onHost("h1"), attempts(2), tried("h0"))
		addClaim(t, st, inst.ID, "h1")
		addAction(t, st, inst.ID, "create", "req-1")

		mustSend(t, c, protocol.KindInstanceReport, report(inst, "h1", lifecycle.ActCreate, "req-1", false))

		got := loadInst(t, st, inst.ID)
		if got.VMState != lifecycle.Error || got.TaskState != "" || got.PowerState != 0 {
			t.Errorf("state = %s/%q/%d, want error/none/0", got.VMState, got.TaskState, got.PowerState)
		}
		wantMsg := fmt.Sprintf("Exceeded maximum number of retries. Exhausted all hosts available for retrying build failures for instance %s.", inst.ID)
		if got.FaultCode != 500 || got.FaultMessage != wantMsg {
			t.Errorf("fault = %d %q, want 500 %q", got.FaultCode, got.FaultMessage, wantMsg)
		}
		if got.FaultDetails != "boom: create failed" {
			t.Errorf("fault details = %q, want the agent's error", got.FaultDetails)
		}
		if got.FaultAt == nil || !got.FaultAt.Equal(testNow) {
			t.Errorf("fault_at = %v", got.FaultAt)
		}
		if got.TriedHosts != "h0,h1" {
			t.Errorf("tried_hosts = %q, want h0,h1", got.TriedHosts)
		}
		if h := claimHosts(t, st, inst.ID); len(h) != 0 {
			t.Errorf("claims on %v, want none", h)
		}
		if s := b.Sent(bus.SchedulerQueue); len(s) != 0 {
			t.Errorf("the last attempt was rescheduled: %d messages", len(s))
		}

		// With a single attempt allowed the first failure is final.
		c1 := newTestConductor(st, b, 1)
		one := addInstance(t, st, onHost("h1"))
		mustSend(t, c1, protocol.KindInstanceReport, report(one, "h1", lifecycle.ActCreate, "req-2", false))
		if got := loadInst(t, st, one.ID); got.VMState != lifecycle.Error || !strings.HasPrefix(got.FaultMessage, "Exceeded maximum number of retries") {
			t.Errorf("single attempt: %s %q, want error with the retries fault", got.VMState, got.FaultMessage)
		}
	})
}

// TestStaleBuildReports: a build report that no longer answers the
// instance's state (another host, already active, deleted, its build
// preempted by a delete) changes nothing, whether it says OK or failed.
func TestStaleBuildReports(t *testing.T) {
	cases := []struct {
		name       string
		opts       []instOpt
		reportFrom string
	}{
		{"wrong host", []instOpt{onHost("h2")}, "h1"},
		{"no host yet", []instOpt{state(lifecycle.Building, lifecycle.Scheduling), tried("h0"), attempts(2)}, "h1"},
		{"already active", []instOpt{onHost("h1"), state(lifecycle.Active, lifecycle.NoTask), power(lifecycle.Running)}, "h1"},
		{"already error", []instOpt{onHost("h1"), state(lifecycle.Error, lifecycle.NoTask)}, "h1"},
		{"deleting", []instOpt{onHost("h1"), state(lifecycle.Building, lifecycle.Deleting)}, "h1"},
		{"deleted", []instOpt{onHost("h1"), deletedAt(testNow.Add(-time.Second))}, "h1"},
	}
	for _, tc := range cases {
		for _, ok := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/ok=%v", tc.name, ok), func(t *testing.T) {
				st := openSQLite(t)
				b := bus.NewMem()
				c := newTestConductor(st, b, 3)
				addHost(t, st, "h1")
				addHost(t, st, "h2")
				created := addInstance(t, st, tc.opts...)
				if created.Host != "" {
					addClaim(t, st, created.ID, created.Host)
				}
				before := loadInst(t, st, created.ID)
				claims := claimHosts(t, st, created.ID)

				r := report(before, tc.reportFrom, lifecycle.ActCreate, "req-1", ok)
				r.Attempt = 1
				mustSend(t, c, protocol.KindInstanceReport, r)

				sameInstance(t, loadInst(t, st, created.ID), before)
				if got := claimHosts(t, st, created.ID); !slices.Equal(got, claims) {
					t.Errorf("claims %v → %v", claims, got)
				}
				if s := b.Sent(bus.SchedulerQueue); len(s) != 0 {
					t.Errorf("a stale report sent %d scheduler messages", len(s))
				}
			})
		}
	}
}

// TestDuplicateBuildReports: a redelivered report, once its first copy
// was applied, changes nothing more.
func TestDuplicateBuildReports(t *testing.T) {
	st := openSQLite(t)
	b := bus.NewMem()
	c := newTestConductor(st, b, 3)
	addHost(t, st, "h1")
	inst := addInstance(t, st, onHost("h1"))
	addClaim(t, st, inst.ID, "h1")

	r := report(inst, "h1", lifecycle.ActCreate, "req-1", true)
	mustSend(t, c, protocol.KindInstanceReport, r)
	before := loadInst(t, st, inst.ID)
	c.now = func() time.Time { return testNow.Add(time.Hour) }
	mustSend(t, c, protocol.KindInstanceReport, r)
	sameInstance(t, loadInst(t, st, inst.ID), before)
	if h := claimHosts(t, st, inst.ID); !slices.Equal(h, []string{"h1"}) {
		t.Errorf("claims = %v", h)
	}
}

// flakyBus fails the next failures Publish calls, like a broker that
// went away for a moment.
type flakyBus struct {
	*bus.Mem
	failures int
}

func (f *flakyBus) Publish(ctx context.Context, queue string, m bus.Message) error {
	if f.failures > 0 {
		f.failures--
		return errors.New("broker unreachable")
	}
	return f.Mem.Publish(ctx, queue, m)
}

// TestRescheduleSurvivesPublishFailure: when the reschedule request cannot
// be sent, the report is retried, and its redelivery sends the request
// (the instance is already waiting for a host by then). A redelivery
// after a successful send repeats the request, which the scheduler
// handles idempotently, and never moves the instance further.
func TestRescheduleSurvivesPublishFailure(t *testing.T) {
	st := openSQLite(t)
	mem := bus.NewMem()
	fb := &flakyBus{Mem: mem, failures: 1}
	c := newTestConductor(st, fb, 3)
	addHost(t, st, "h1")
	inst := addInstance(t, st, onHost("h1"))
	addClaim(t, st, inst.ID, "h1")

	m, err := bus.NewMessage(protocol.KindInstanceReport, report(inst, "h1", lifecycle.ActCreate, "req-1", false))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Handle(context.Background(), m)
	if err == nil || !bus.IsRetry(err) {
		t.Fatalf("Handle with the broker down = %v, want a retry error", err)
	}
	if n := len(mem.Sent(bus.SchedulerQueue)); n != 0 {
		t.Fatalf("%d messages sent while the broker was down", n)
	}

	m.Redelivered = true
	if _, err := c.Handle(context.Background(), m); err != nil {
		t.Fatalf("redelivered report: %v", err)
	}
	want := protocol.ScheduleInstance{InstanceID: inst.ID, RequestID: "req-1", Attempt: 2, Excluded: []string{"h1"}}
	reqs := scheduleRequests(t, mem)
	if len(reqs) != 1 || !sameSchedule(reqs[0], want) {
		t.Fatalf("scheduler got %+v, want [%+v]", reqs, want)
	}
	got := loadInst(t, st, inst.ID)
	if got.TaskState != lifecycle.Scheduling || got.BuildAttempts != 2 || got.TriedHosts != "h1" || got.Host != "" {
		t.Errorf("instance = task %q attempts %d tried %q host %q", got.TaskState, got.BuildAttempts, got.TriedHosts, got.Host)
	}

	// Another redelivery: the same request again, nothing else.
	if _, err := c.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	reqs = scheduleRequests(t, mem)
	if len(reqs) != 2 || !sameSchedule(reqs[1], want) {
		t.Errorf("scheduler got %+v, want the same request twice", reqs)
	}
	sameInstance(t, loadInst(t, st, inst.ID), got)
}

func TestDeleteReport(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		b := bus.NewMem()
		c := newTestConductor(st, b, 3)
		addHost(t, st, "h1")
		addHost(t, st, "h2")
		inst := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.Deleting), power(lifecycle.Running))
		addClaim(t, st, inst.ID, "h1")
		addClaim(t, st, inst.ID, "h2") // e.g. a resize target
		addAction(t, st, inst.ID, "delete", "req-d")

		mustSend(t, c, protocol.KindInstanceReport, report(inst, "h1", lifecycle.ActDelete, "req-d", true))

		got := loadInst(t, st, inst.ID)
		if got.VMState != lifecycle.Deleted || got.TaskState != "" || got.PowerState != 0 {
			t.Errorf("state = %s/%q/%d, want deleted/none/0", got.VMState, got.TaskState, got.PowerState)
		}
		if got.DeletedAt == nil || !got.DeletedAt.Equal(testNow) || got.TerminatedAt == nil || !got.TerminatedAt.Equal(testNow) {
			t.Errorf("deleted_at %v terminated_at %v, want %v", got.DeletedAt, got.TerminatedAt, testNow)
		}
		if h := claimHosts(t, st, inst.ID); len(h) != 0 {
			t.Errorf("claims left on %v", h)
		}
		if evs := eventsOf(t, st, inst.ID, "req-d"); len(evs) != 1 || evs[0].Result != "Success" {
			t.Errorf("events = %+v", evs)
		}

		// A redelivered delete report leaves the deleted row alone.
		c.now = func() time.Time { return testNow.Add(time.Hour) }
		mustSend(t, c, protocol.KindInstanceReport, report(inst, "h1", lifecycle.ActDelete, "req-d", true))
		sameInstance(t, loadInst(t, st, inst.ID), got)
	})
}

func TestDeleteReportFailure(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	addHost(t, st, "h1")
	inst := addInstance(t, st, onHost("h1"), state(lifecycle.Stopped, lifecycle.Deleting), power(lifecycle.Shutdown))
	addClaim(t, st, inst.ID, "h1")

	mustSend(t, c, protocol.KindInstanceReport, report(inst, "h1", lifecycle.ActDelete, "req-d", false))

	got := loadInst(t, st, inst.ID)
	if got.VMState != lifecycle.Error || got.TaskState != "" || got.DeletedAt != nil {
		t.Errorf("state = %s/%q deleted_at %v, want error/none, not deleted", got.VMState, got.TaskState, got.DeletedAt)
	}
	if got.FaultCode != 500 || got.FaultMessage == "" || got.FaultDetails != "boom: delete failed" {
		t.Errorf("fault = %d %q %q", got.FaultCode, got.FaultMessage, got.FaultDetails)
	}
	if got.FaultAt == nil || !got.FaultAt.Equal(testNow) {
		t.Errorf("fault_at = %v", got.FaultAt)
	}
	if h := claimHosts(t, st, inst.ID); !slices.Equal(h, []string{"h1"}) {
		t.Errorf("claims = %v, want h1 kept (the container may still be there)", h)
	}

	// A failed delete report for an instance not being deleted is stale.
	idle := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.NoTask), power(lifecycle.Running))
	before := loadInst(t, st, idle.ID)
	mustSend(t, c, protocol.KindInstanceReport, report(idle, "h1", lifecycle.ActDelete, "req-x", false))
	sameInstance(t, loadInst(t, st, idle.ID), before)
}

// TestActionReports: each action's report applies only while the
// instance runs that action; success reaches the action's outcome, failure
// clears the task and keeps the vm_state.
func TestActionReports(t *testing.T) {
	cases := []struct {
		action lifecycle.Action
		from   lifecycle.VMState
		vm     lifecycle.VMState // after success
		power  lifecycle.PowerState
	}{
		{lifecycle.ActStop, lifecycle.Active, lifecycle.Stopped, lifecycle.Shutdown},
		{lifecycle.ActStop, lifecycle.Paused, lifecycle.Stopped, lifecycle.Shutdown},
		{lifecycle.ActStart, lifecycle.Stopped, lifecycle.Active, lifecycle.Running},
		{lifecycle.ActPause, lifecycle.Active, lifecycle.Paused, lifecycle.PausedPS},
		{lifecycle.ActUnpause, lifecycle.Paused, lifecycle.Active, lifecycle.Running},
		{lifecycle.ActReboot, lifecycle.Active, lifecycle.Active, lifecycle.Running},
		{lifecycle.ActRebootHard, lifecycle.Stopped, lifecycle.Active, lifecycle.Running},
		{lifecycle.ActRebootHard, lifecycle.Error, lifecycle.Active, lifecycle.Running},
	}
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	addHost(t, st, "h1")
	startPower := map[lifecycle.VMState]lifecycle.PowerState{lifecycle.Active: lifecycle.Running,
		lifecycle.Stopped: lifecycle.Shutdown, lifecycle.Paused: lifecycle.PausedPS, lifecycle.Error: lifecycle.NoState}
	for _, tc := range cases {
		task := lifecycle.TaskOf(tc.action)
		t.Run(fmt.Sprintf("%s from %s", tc.action, tc.from), func(t *testing.T) {
			// Success.
			inst := addInstance(t, st, onHost("h1"), state(tc.from, task), power(startPower[tc.from]))
			addAction(t, st, inst.ID, string(tc.action), "req-ok")
			mustSend(t, c, protocol.KindInstanceReport, report(inst, "h1", tc.action, "req-ok", true))
			got := loadInst(t, st, inst.ID)
			if got.VMState != tc.vm || got.TaskState != "" || got.PowerState != int(tc.power) {
				t.Errorf("success: %s/%q/%d, want %s/none/%d", got.VMState, got.TaskState, got.PowerState, tc.vm, tc.power)
			}
			if evs := eventsOf(t, st, inst.ID, "req-ok"); len(evs) != 1 || evs[0].Result != "Success" {
				t.Errorf("events = %+v", evs)
			}

			// Failure: the task is cleared, the vm_state stays; the
			// fault and the event's details say why.
			inst = addInstance(t, st, onHost("h1"), state(tc.from, task), power(startPower[tc.from]))
			addAction(t, st, inst.ID, string(tc.action), "req-fail")
			r := report(inst, "h1", tc.action, "req-fail", false)
			r.PowerState = int(startPower[tc.from])
			r.Error, r.ErrorMessage = "docker start abc: runc: exec: no such file", "the server's command could not be started."
			mustSend(t, c, protocol.KindInstanceReport, r)
			got = loadInst(t, st, inst.ID)
			if got.VMState != tc.from || got.TaskState != "" || got.PowerState != int(startPower[tc.from]) {
				t.Errorf("failure: %s/%q/%d, want %s/none/%d", got.VMState, got.TaskState, got.PowerState, tc.from, startPower[tc.from])
			}
			wantFault := fmt.Sprintf("Action %s of instance %s failed: the server's command could not be started.", tc.action, inst.ID)
			if got.FaultMessage != wantFault || got.FaultDetails != r.Error || got.FaultCode != 500 {
				t.Errorf("failure's fault %d %q %q, want 500 %q with the agent's error as details", got.FaultCode, got.FaultMessage, got.FaultDetails, wantFault)
			}
			if evs := eventsOf(t, st, inst.ID, "req-fail"); len(evs) != 1 || evs[0].Result != "Error" ||
				evs[0].Details != r.ErrorMessage || evs[0].Traceback != r.Error {
				t.Errorf("failure's events = %+v, want one Error with the safe message as details", evs)
			}

			// Stale: the instance is not (or no longer) in this action's
			// task, runs on another host, or was deleted.
			stale := []store.Instance{
				addInstance(t, st, onHost("h1"), state(tc.from, lifecycle.NoTask), power(startPower[tc.from])),
				addInstance(t, st, onHost("h1"), state(tc.from, lifecycle.Deleting), power(startPower[tc.from])),
				addInstance(t, st, onHost("h2"), state(tc.from, task), power(startPower[tc.from])),
				addInstance(t, st, onHost("h1"), deletedAt(testNow.Add(-time.Minute))),
			}
			for i, s := range stale {
				before := loadInst(t, st, s.ID)
				for _, ok := range []bool{true, false} {
					mustSend(t, c, protocol.KindInstanceReport, report(s, "h1", tc.action, "req-stale", ok))
				}
				after := loadInst(t, st, s.ID)
				if after.VMState != before.VMState || after.TaskState != before.TaskState ||
					after.PowerState != before.PowerState || !after.UpdatedAt.Equal(before.UpdatedAt) {
					t.Errorf("stale case %d changed: %s/%q/%d → %s/%q/%d", i, before.VMState, before.TaskState,
						before.PowerState, after.VMState, after.TaskState, after.PowerState)
				}
			}
		})
	}
	// A failure that leaves nothing of the server on its host (its
	// container is gone) puts it in ERROR, where the API shows the fault.
	gone := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.RebootingHard), power(lifecycle.Running))
	r := report(gone, "h1", lifecycle.ActRebootHard, "req-gone", false)
	r.PowerState, r.ErrorMessage, r.ErrorKind = int(lifecycle.NoState), "the server's container is missing on its host", "NotFound"
	mustSend(t, c, protocol.KindInstanceReport, r)
	if got := loadInst(t, st, gone.ID); got.VMState != lifecycle.Error || got.TaskState != "" ||
		got.FaultMessage != "Action reboot_hard of instance "+gone.ID+" failed: the server's container is missing on its host." {
		t.Errorf("after a failed hard reboot without a container: %s/%q fault %q", got.VMState, got.TaskState, got.FaultMessage)
	}
	// A power state the host could not read (dockerd down) is no proof
	// the server is gone: it keeps its state.
	unread := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.RebootingHard), power(lifecycle.Running))
	r = report(unread, "h1", lifecycle.ActRebootHard, "req-unread", false)
	r.PowerState, r.ErrorKind = int(lifecycle.NoState), "Unavailable"
	mustSend(t, c, protocol.KindInstanceReport, r)
	if got := loadInst(t, st, unread.ID); got.VMState != lifecycle.Active || got.TaskState != "" || got.FaultMessage == "" {
		t.Errorf("after a failed hard reboot with an unreadable power state: %s/%q fault %q", got.VMState, got.TaskState, got.FaultMessage)
	}

	// Another action's report does not finish this one.
	inst := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.PoweringOff), power(lifecycle.Running))
	before := loadInst(t, st, inst.ID)
	mustSend(t, c, protocol.KindInstanceReport, report(inst, "h1", lifecycle.ActPause, "req-p", true))
	sameInstance(t, loadInst(t, st, inst.ID), before)
}

// TestHardRebootPreemptsReboot: a hard reboot taken over a soft one (as
// lifecycle.Begin allows) is finished by its own report; the soft
// reboot's late report is stale.
func TestHardRebootPreemptsReboot(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	task, err := lifecycle.Begin(lifecycle.ActRebootHard, lifecycle.Active, lifecycle.Rebooting)
	if err != nil {
		t.Fatal(err)
	}
	inst := addInstance(t, st, onHost("h1"), state(lifecycle.Active, task), power(lifecycle.Running))
	before := loadInst(t, st, inst.ID)
	mustSend(t, c, protocol.KindInstanceReport, report(inst, "h1", lifecycle.ActReboot, "req-soft", false))
	sameInstance(t, loadInst(t, st, inst.ID), before)
	mustSend(t, c, protocol.KindInstanceReport, report(inst, "h1", lifecycle.ActRebootHard, "req-hard", true))
	if got := loadInst(t, st, inst.ID); got.VMState != lifecycle.Active || got.TaskState != "" {
		t.Errorf("after the hard reboot: %s/%q", got.VMState, got.TaskState)
	}
}

func TestPowerSync(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	addHost(t, st, "h1")
	add := func(opts ...instOpt) store.Instance {
		return addInstance(t, st, append([]instOpt{onHost("h1")}, opts...)...)
	}
	idle := func(vm lifecycle.VMState, ps lifecycle.PowerState) []instOpt {
		return []instOpt{state(vm, lifecycle.NoTask), power(ps)}
	}
	type expect struct {
		inst  store.Instance
		seen  lifecycle.PowerState
		vm    lifecycle.VMState
		power lifecycle.PowerState
		same  bool // the row must not be touched at all
	}
	cases := map[string]*expect{
		"active, container stopped": {inst: add(idle(lifecycle.Active, lifecycle.Running)...), seen: lifecycle.Shutdown, vm: lifecycle.Stopped, power: lifecycle.Shutdown},
		"active, container gone":    {inst: add(idle(lifecycle.Active, lifecycle.Running)...), seen: lifecycle.NoState, vm: lifecycle.Stopped, power: lifecycle.NoState},
		"active, container crashed": {inst: add(idle(lifecycle.Active, lifecycle.Running)...), seen: lifecycle.Crashed, vm: lifecycle.Stopped, power: lifecycle.Crashed},
		"active, running":           {inst: add(idle(lifecycle.Active, lifecycle.Running)...), seen: lifecycle.Running, vm: lifecycle.Active, power: lifecycle.Running},
		"active, found paused":      {inst: add(idle(lifecycle.Active, lifecycle.Running)...), seen: lifecycle.PausedPS, vm: lifecycle.Active, power: lifecycle.PausedPS},
		"paused, container gone":    {inst: add(idle(lifecycle.Paused, lifecycle.PausedPS)...), seen: lifecycle.NoState, vm: lifecycle.Stopped, power: lifecycle.NoState},
		"stopped, found running":    {inst: add(idle(lifecycle.Stopped, lifecycle.Shutdown)...), seen: lifecycle.Running, vm: lifecycle.Stopped, power: lifecycle.Running},
		"error, container gone":     {inst: add(idle(lifecycle.Error, lifecycle.Running)...), seen: lifecycle.NoState, vm: lifecycle.Error, power: lifecycle.NoState},
		"active, stop in flight":    {inst: add(state(lifecycle.Active, lifecycle.PoweringOff), power(lifecycle.Running)), seen: lifecycle.Shutdown, same: true},
		"building, spawning":        {inst: add(state(lifecycle.Building, lifecycle.Spawning)), seen: lifecycle.NoState, same: true},
		"active on another host":    {inst: addInstance(t, st, append(idle(lifecycle.Active, lifecycle.Running), onHost("h2"))...), seen: lifecycle.NoState, same: true},
		"deleted":                   {inst: add(deletedAt(testNow.Add(-time.Minute))), seen: lifecycle.NoState, same: true},
	}
	before := map[string]store.Instance{}
	ps := protocol.PowerSync{Host: "h1", States: map[string]int{"no-such-instance": 4}, Orphans: []string{"orphan-1"}}
	for name, e := range cases {
		ps.States[e.inst.ID] = int(e.seen)
		before[name] = loadInst(t, st, e.inst.ID)
	}
	mustSend(t, c, protocol.KindPowerSync, ps)
	for name, e := range cases {
		got := loadInst(t, st, e.inst.ID)
		if e.same {
			t.Run(name, func(t *testing.T) { sameInstance(t, got, before[name]) })
			continue
		}
		if got.VMState != e.vm || got.PowerState != int(e.power) || got.TaskState != "" {
			t.Errorf("%s: %s/%q/%d, want %s/none/%d", name, got.VMState, got.TaskState, got.PowerState, e.vm, e.power)
		}
	}
}

func TestInstancesOnHost(t *testing.T) {
	st := openSQLite(t)
	b := bus.NewMem()
	c := newTestConductor(st, b, 3)
	img := store.Image{ID: "img-1", Name: "busybox", Status: "active", RegistryRef: "127.0.0.1:5050/capsule/busybox:latest"}
	if err := st.DB.Create(&img).Error; err != nil {
		t.Fatal(err)
	}
	withImage := func(i *store.Instance) {
		i.ImageID = img.ID
		i.Metadata = `{"role":"web"}`
		i.ExtraSpecs = `{"hw:cpu_policy":"shared"}`
		i.Name, i.Hostname = "web-1", "web-1"
	}
	want := map[string]protocol.ExpectedInstance{}
	for _, opts := range [][]instOpt{
		{onHost("h1"), state(lifecycle.Active, lifecycle.NoTask), withImage},
		{onHost("h1"), state(lifecycle.Building, lifecycle.Spawning)},
		{onHost("h1"), state(lifecycle.Stopped, lifecycle.PoweringOn)},
		{onHost("h1"), state(lifecycle.Error, lifecycle.NoTask)},
		{onHost("h1"), state(lifecycle.Active, lifecycle.Deleting)},
		{onHost("h1"), state(lifecycle.Resized, lifecycle.NoTask), power(lifecycle.Running)},
	} {
		inst := addInstance(t, st, opts...)
		want[inst.ID] = protocol.ExpectedInstance{VMState: inst.VMState, TaskState: inst.TaskState, PowerState: inst.PowerState}
	}
	addInstance(t, st, onHost("h1"), deletedAt(testNow))
	addInstance(t, st, onHost("h2"), state(lifecycle.Active, lifecycle.NoTask))
	addInstance(t, st, state(lifecycle.Building, lifecycle.Scheduling))

	// Through the bus, as an agent asks, so the reply is checked after
	// its trip through JSON.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Consume(ctx, bus.ConductorQueue, c.Handle); err != nil {
		t.Fatal(err)
	}
	ask := func(host string) protocol.InstancesOnHostReply {
		m, err := bus.NewMessage(protocol.KindInstancesOnHost, protocol.InstancesOnHostRequest{Host: host})
		if err != nil {
			t.Fatal(err)
		}
		var reply protocol.InstancesOnHostReply
		if err := b.Call(ctx, bus.ConductorQueue, m, &reply); err != nil {
			t.Fatalf("instances_on_host %s: %v", host, err)
		}
		return reply
	}

	reply := ask("h1")
	if len(reply.Instances) != len(want) {
		t.Fatalf("%d instances on h1, want %d: %+v", len(reply.Instances), len(want), reply.Instances)
	}
	for _, e := range reply.Instances {
		w, ok := want[e.Spec.ID]
		if !ok {
			t.Errorf("unexpected instance %s", e.Spec.ID)
			continue
		}
		if e.VMState != w.VMState || e.TaskState != w.TaskState || e.PowerState != w.PowerState {
			t.Errorf("%s: %s/%q/%d, want %s/%q/%d", e.Spec.ID, e.VMState, e.TaskState, e.PowerState, w.VMState, w.TaskState, w.PowerState)
		}
		// The spec is scheduler.SpecFor's: the flavor copy, and for the
		// instance with an image its registry ref, metadata and extra specs.
		inst := loadInst(t, st, e.Spec.ID)
		if e.Spec.VCPUs != 1 || e.Spec.MemoryMB != 512 || e.Spec.DiskGB != 1 || e.Spec.ProjectID != "p1" || e.Spec.Name != inst.Name {
			t.Errorf("spec %+v does not carry the instance's flavor", e.Spec)
		}
		if inst.ImageID != "" {
			if e.Spec.ImageRef != img.RegistryRef || e.Spec.Metadata["role"] != "web" ||
				e.Spec.ExtraSpecs["hw:cpu_policy"] != "shared" || e.Spec.Hostname != "web-1" {
				t.Errorf("spec = %+v, want image ref, metadata and extra specs", e.Spec)
			}
		}
	}

	empty := ask("h9")
	if empty.Instances == nil || len(empty.Instances) != 0 {
		t.Errorf("host with nothing: %+v, want an empty (not null) list", empty)
	}
	raw, _ := json.Marshal(mustSend(t, c, protocol.KindInstancesOnHost, protocol.InstancesOnHostRequest{Host: "h9"}))
	if !strings.Contains(string(raw), `"instances":[]`) {
		t.Errorf("reply JSON %s, want \"instances\":[]", raw)
	}
}

func TestPeriodic(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		c := newTestConductor(st, bus.NewMem(), 3)
		addHost(t, st, "h1")
		old := createdAt(testNow.Add(-11 * time.Minute))
		stuckSpawning := addInstance(t, st, onHost("h1"), old)
		addClaim(t, st, stuckSpawning.ID, "h1")
		stuckScheduling := addInstance(t, st, state(lifecycle.Building, lifecycle.Scheduling), old)
		fresh := addInstance(t, st, onHost("h1"), createdAt(testNow.Add(-9*time.Minute)))
		oldActive := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.NoTask), old)
		gone := addInstance(t, st, onHost("h1"), deletedAt(testNow.Add(-time.Hour)), old)
		addClaim(t, st, gone.ID, "h1") // leaked by a crash between delete and release
		live := map[string]store.Instance{}
		for _, i := range []store.Instance{fresh, oldActive} {
			addClaim(t, st, i.ID, "h1")
			live[i.ID] = loadInst(t, st, i.ID)
		}

		c.periodic(context.Background())

		for _, s := range []store.Instance{stuckSpawning, stuckScheduling} {
			got := loadInst(t, st, s.ID)
			if got.VMState != lifecycle.Error || got.TaskState != "" || got.FaultCode != 500 ||
				!strings.Contains(got.FaultMessage, "timed out") || !strings.Contains(got.FaultMessage, s.ID) {
				t.Errorf("stuck build %s: %s/%q fault %d %q, want error with a timeout fault", s.TaskState, got.VMState, got.TaskState, got.FaultCode, got.FaultMessage)
			}
			if got.FaultAt == nil || !got.FaultAt.Equal(testNow) {
				t.Errorf("fault_at = %v", got.FaultAt)
			}
		}
		for id, before := range live {
			sameInstance(t, loadInst(t, st, id), before)
			if h := claimHosts(t, st, id); !slices.Equal(h, []string{"h1"}) {
				t.Errorf("claim of live instance %s: %v", id, h)
			}
		}
		if h := claimHosts(t, st, gone.ID); len(h) != 0 {
			t.Errorf("claim of a deleted instance kept: %v", h)
		}
		// An ERROR instance on a host keeps its room until it is deleted.
		if h := claimHosts(t, st, stuckSpawning.ID); !slices.Equal(h, []string{"h1"}) {
			t.Errorf("claim of the timed-out build: %v", h)
		}
	})
}

func TestPeriodicBuildTimeoutFromConfig(t *testing.T) {
	st := openSQLite(t)
	c := New(st, bus.NewMem(), config.Conductor{BuildTimeout: 2 * time.Minute}, 3, quietLog())
	c.now = func() time.Time { return testNow }
	stuck := addInstance(t, st, createdAt(testNow.Add(-3*time.Minute)), state(lifecycle.Building, lifecycle.Scheduling))
	fresh := addInstance(t, st, createdAt(testNow.Add(-time.Minute)), state(lifecycle.Building, lifecycle.Scheduling))
	c.periodic(context.Background())
	if got := loadInst(t, st, stuck.ID); got.VMState != lifecycle.Error || !strings.Contains(got.FaultMessage, "2m0s") {
		t.Errorf("stuck: %s %q, want error after 2m0s", got.VMState, got.FaultMessage)
	}
	if got := loadInst(t, st, fresh.ID); got.VMState != lifecycle.Building {
		t.Errorf("fresh build: %s, want still building", got.VMState)
	}
}

func TestHandleBadMessages(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)

	// Unknown kinds and undecodable bodies are dropped, not retried.
	if _, err := send(t, c, "no_such_kind", map[string]string{}); err == nil || bus.IsRetry(err) {
		t.Errorf("unknown kind: err = %v, want a final error", err)
	}
	for _, kind := range []string{protocol.KindHostReport, protocol.KindInstanceReport, protocol.KindPowerSync, protocol.KindInstancesOnHost} {
		m := bus.Message{ID: "m1", Kind: kind, Body: json.RawMessage(`"not an object"`)}
		if _, err := c.Handle(context.Background(), m); err == nil || bus.IsRetry(err) {
			t.Errorf("%s with a bad body: err = %v, want a final error", kind, err)
		}
	}
	// A report about an instance the database never had is dropped.
	if _, err := send(t, c, protocol.KindInstanceReport, protocol.InstanceReport{InstanceID: "nope", Host: "h1",
		Action: lifecycle.ActCreate, OK: true}); err != nil {
		t.Errorf("report of an unknown instance: %v", err)
	}
}

// TestDatabaseDownIsRetried: a report the conductor cannot record because
// the database is unreachable comes back later instead of being lost.
func TestDatabaseDownIsRetried(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	inst := addInstance(t, st, onHost("h1"))
	st.Close()
	for kind, body := range map[string]any{
		protocol.KindHostReport:     hostReport("h1"),
		protocol.KindInstanceReport: report(inst, "h1", lifecycle.ActCreate, "r", true),
		protocol.KindPowerSync:      protocol.PowerSync{Host: "h1", States: map[string]int{inst.ID: 1}},
	} {
		if _, err := send(t, c, kind, body); !bus.IsRetry(err) {
			t.Errorf("%s with the database down: err = %v, want a retry", kind, err)
		}
	}
	if _, err := send(t, c, protocol.KindInstancesOnHost, protocol.InstancesOnHostRequest{Host: "h1"}); err == nil {
		t.Error("instances_on_host with the database down succeeded")
	}
}

// TestPowerSyncResumeFailed: a server the agent could not start again
// after its host restarted goes to ERROR with a fault naming the failed
// step (the whole error as the admins' details); one whose state moved
// on meanwhile (a task began, another host) is left alone.
func TestPowerSyncResumeFailed(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	addHost(t, st, "h1")
	failed := addInstance(t, st, onHost("h1"), state(lifecycle.Suspended, lifecycle.NoTask), power(lifecycle.PausedPS))
	verify := addInstance(t, st, onHost("h1"), state(lifecycle.Resized, lifecycle.NoTask), power(lifecycle.Running))
	busy := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.PoweringOff), power(lifecycle.Running))
	moved := addInstance(t, st, onHost("h2"), state(lifecycle.Active, lifecycle.NoTask), power(lifecycle.Running))
	before := map[string]store.Instance{busy.ID: loadInst(t, st, busy.ID), moved.ID: loadInst(t, st, moved.ID)}
	why := "start: docker start: Error response from daemon: /var/lib/x: no space left on device"
	mustSend(t, c, protocol.KindPowerSync, protocol.PowerSync{Host: "h1", States: map[string]int{},
		ResumeFailed: map[string]string{failed.ID: why, verify.ID: why, busy.ID: why, moved.ID: why}})

	for _, id := range []string{failed.ID, verify.ID} {
		got := loadInst(t, st, id)
		if got.VMState != lifecycle.Error || got.TaskState != "" || got.PowerState != int(lifecycle.NoState) {
			t.Errorf("unresumable server %s: %s/%q/%d, want error/none/0", id, got.VMState, got.TaskState, got.PowerState)
		}
		if got.FaultMessage != "Could not resume the instance after its host restarted: start" || got.FaultDetails != why || got.FaultCode != 500 {
			t.Errorf("fault of %s = %d %q / %q", id, got.FaultCode, got.FaultMessage, got.FaultDetails)
		}
	}
	for id, b := range before {
		sameInstance(t, loadInst(t, st, id), b)
	}
}

// The conductor's offload of a server shelved longer than
// shelved_offload_time waits while a volume is being attached to or
// detached from it (from 2.20 a shelved server takes volume changes on
// its host, which an offload would cut short): it stays shelved, nothing
// is sent, and the next pass once the volume settled offloads it.
func TestOffloadWaitsForVolumeWork(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		b := bus.NewMem()
		c := New(st, b, config.Conductor{ShelvedOffloadTime: time.Minute}, 3, quietLog())
		c.now = func() time.Time { return testNow }
		addHost(t, st, "h1")
		at := testNow.Add(-time.Hour)
		inst := addInstance(t, st, onHost("h1"), state(lifecycle.Shelved, lifecycle.NoTask), func(i *store.Instance) {
			i.ShelvedAt, i.ShelvedHost = &at, "h1"
		})
		vol := uuid.NewString()
		if err := st.DB.Create(&store.Volume{ID: vol, ProjectID: "p1", SizeGB: 1, Status: store.VolumeDetaching,
			Backend: protocol.BackendShared}).Error; err != nil {
			t.Fatal(err)
		}
		att := store.VolumeAttachment{ID: uuid.NewString(), VolumeID: vol, InstanceID: inst.ID, Host: "h1",
			Device: "/dev/vdb", MountPath: "/mnt/" + vol, Status: store.AttachmentDetaching}
		if err := st.DB.Create(&att).Error; err != nil {
			t.Fatal(err)
		}
		c.offloadShelved(context.Background())
		if got := loadInst(t, st, inst.ID); got.VMState != lifecycle.Shelved || got.TaskState != lifecycle.NoTask {
			t.Fatalf("offloaded with a detach in flight: %s/%s", got.VMState, got.TaskState)
		}
		if sent := b.Sent(bus.ComputeQueue("h1")); len(sent) != 0 {
			t.Fatalf("sent %v with a detach in flight", sent)
		}
		var n int64
		st.DB.Model(&store.InstanceAction{}).Where("instance_id = ?", inst.ID).Count(&n)
		if n != 0 {
			t.Fatalf("%d offload actions recorded for an offload that did not start", n)
		}
		if err := st.DB.Model(&store.VolumeAttachment{}).Where("id = ?", att.ID).Update("status", store.AttachmentAttached).Error; err != nil {
			t.Fatal(err)
		}
		c.offloadShelved(context.Background())
		if got := loadInst(t, st, inst.ID); got.TaskState != lifecycle.ShelvingOffloading {
			t.Fatalf("settled volume, yet not offloading: %s/%s", got.VMState, got.TaskState)
		}
	})
}
