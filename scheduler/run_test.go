package scheduler

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

const testImageRef = "127.0.0.1:5050/capsule/busybox:latest"

// newInstance stores an image, a building instance waiting for a host and
// its "create" action with request id "req-<id>".
func newInstance(t *testing.T, st *store.Store, id string, mod ...func(*store.Instance)) *store.Instance {
	t.Helper()
	img := store.Image{ID: "img-" + id, Name: "busybox", Status: "active", RegistryRef: testImageRef}
	if err := st.DB.Create(&img).Error; err != nil {
		t.Fatal(err)
	}
	inst := store.Instance{ID: id, Name: "vm-" + id, Hostname: "vm-" + id, ProjectID: "p1", UserID: "u1",
		ImageID: img.ID, VCPUs: 1, MemoryMB: 512, RootGB: 5, ExtraSpecs: `{"hw:cpu_policy":"shared"}`,
		Metadata: `{"role":"web"}`, VMState: lifecycle.Building, TaskState: lifecycle.Scheduling,
		BuildAttempts: 1}
	for _, m := range mod {
		m(&inst)
	}
	if err := st.DB.Create(&inst).Error; err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	act := store.InstanceAction{InstanceID: id, Action: "create", RequestID: "req-" + id, UserID: "u1",
		ProjectID: "p1", StartTime: now, UpdatedAt: now}
	if err := st.DB.Create(&act).Error; err != nil {
		t.Fatal(err)
	}
	return &inst
}

// runScheduler starts s.Run on its bus until the test ends.
func runScheduler(t *testing.T, s *Scheduler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func scheduleMsg(t *testing.T, id string, attempt int, excluded ...string) bus.Message {
	t.Helper()
	m, err := bus.NewMessage(protocol.KindScheduleInstance, protocol.ScheduleInstance{
		InstanceID: id, RequestID: "req-" + id, Attempt: attempt, Excluded: excluded})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func publishAndWait(t *testing.T, mem *bus.Mem, msgs ...bus.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range msgs {
		if err := mem.Publish(ctx, bus.SchedulerQueue, m); err != nil {
			t.Fatal(err)
		}
		// WaitIdle ignores queues nobody consumes yet, and Run may not
		// have subscribed yet: first wait for the message to be taken.
		for len(mem.Pending(bus.SchedulerQueue)) > 0 {
			if ctx.Err() != nil {
				t.Fatal("schedule message never consumed")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := mem.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func reload(t *testing.T, st *store.Store, id string) store.Instance {
	t.Helper()
	var inst store.Instance
	if err := st.DB.Where("id = ?", id).First(&inst).Error; err != nil {
		t.Fatal(err)
	}
	return inst
}

func claimsOf(t *testing.T, st *store.Store, id string) []store.Claim {
	t.Helper()
	var cs []store.Claim
	if err := st.DB.Where("instance_id = ?", id).Order("host").Find(&cs).Error; err != nil {
		t.Fatal(err)
	}
	return cs
}

func eventsOf(t *testing.T, st *store.Store, id string) []store.InstanceActionEvent {
	t.Helper()
	var act store.InstanceAction
	if err := st.DB.Preload("Events").Where("instance_id = ? AND action = ?", id, "create").First(&act).Error; err != nil {
		t.Fatal(err)
	}
	return act.Events
}

func builds(t *testing.T, mem *bus.Mem, host string) []protocol.BuildInstance {
	t.Helper()
	var out []protocol.BuildInstance
	for _, m := range mem.Sent(bus.ComputeQueue(host)) {
		if m.Kind != protocol.KindBuildInstance {
			t.Fatalf("unexpected %s on %s", m.Kind, bus.ComputeQueue(host))
		}
		var b protocol.BuildInstance
		if err := m.Decode(&b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestRunPlacesInstanceAndSendsBuild(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		mem := bus.NewMem()
		defer mem.Close()
		addHost(t, st, "h1", zone("az-a"))
		addHost(t, st, "h2", zone("az-b"), capacity(1, 256, 1)) // too small
		newInstance(t, st, "i1")
		runScheduler(t, newTestScheduler(st, mem, "spread"))

		publishAndWait(t, mem, scheduleMsg(t, "i1", 1))

		bs := builds(t, mem, "h1")
		if len(bs) != 1 {
			t.Fatalf("%d builds on compute.h1, want 1", len(bs))
		}
		b := bs[0]
		if b.RequestID != "req-i1" || b.Attempt != 1 {
			t.Errorf("build request id/attempt = %q/%d", b.RequestID, b.Attempt)
		}
		sp := b.Spec
		if sp.ID != "i1" || sp.Name != "vm-i1" || sp.Hostname != "vm-i1" || sp.ProjectID != "p1" ||
			sp.ImageRef != testImageRef || sp.VCPUs != 1 || sp.MemoryMB != 512 || sp.DiskGB != 5 ||
			sp.ExtraSpecs["hw:cpu_policy"] != "shared" || sp.Metadata["role"] != "web" {
			t.Errorf("spec = %+v", sp)
		}
		if n := len(mem.Sent(bus.ComputeQueue("h2"))); n != 0 {
			t.Errorf("%d messages to h2", n)
		}
		inst := reload(t, st, "i1")
		if inst.Host != "h1" || inst.AvailabilityZone != "az-a" || inst.VMState != "building" || inst.TaskState != "spawning" {
			t.Errorf("instance host/az/vm/task = %q/%q/%q/%q", inst.Host, inst.AvailabilityZone, inst.VMState, inst.TaskState)
		}
		cs := claimsOf(t, st, "i1")
		if len(cs) != 1 || cs[0].Host != "h1" || cs[0].VCPUs != 1 || cs[0].MemoryMB != 512 || cs[0].DiskGB != 5 {
			t.Errorf("claims = %+v", cs)
		}
		evs := eventsOf(t, st, "i1")
		if len(evs) != 1 || evs[0].Event != EventSchedule || evs[0].Result != "Success" || evs[0].FinishTime == nil {
			t.Errorf("events = %+v", evs)
		}
	})
}

func TestRunNoValidHostPutsInstanceInError(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		mem := bus.NewMem()
		defer mem.Close()
		addHost(t, st, "h1", capacity(1, 256, 1))
		addHost(t, st, "h2", disabled())
		newInstance(t, st, "i1")
		// A claim left by an earlier attempt must not survive the failure.
		if err := st.ClaimOnHost(context.Background(), "h2", "i1", store.Resources{VCPUs: 1}, nil); err != nil {
			t.Fatal(err)
		}
		runScheduler(t, newTestScheduler(st, mem, "spread"))

		publishAndWait(t, mem, scheduleMsg(t, "i1", 1))

		inst := reload(t, st, "i1")
		if inst.VMState != "error" || inst.TaskState != "" || inst.Host != "" {
			t.Errorf("vm/task/host = %q/%q/%q", inst.VMState, inst.TaskState, inst.Host)
		}
		if inst.FaultCode != 500 || inst.FaultMessage != "No valid host was found. There are not enough hosts available." || inst.FaultAt == nil {
			t.Errorf("fault = %d %q at %v", inst.FaultCode, inst.FaultMessage, inst.FaultAt)
		}
		if !strings.Contains(inst.FaultDetails, "Resources removed 1") || !strings.Contains(inst.FaultDetails, "Enabled removed 1") {
			t.Errorf("fault details = %q", inst.FaultDetails)
		}
		if cs := claimsOf(t, st, "i1"); len(cs) != 0 {
			t.Errorf("claims left: %+v", cs)
		}
		evs := eventsOf(t, st, "i1")
		if len(evs) != 1 || evs[0].Event != EventSchedule || evs[0].Result != "Error" {
			t.Errorf("events = %+v", evs)
		}
		if len(mem.Sent(bus.ComputeQueue("h1")))+len(mem.Sent(bus.ComputeQueue("h2"))) != 0 {
			t.Error("a build was sent although no host fits")
		}
	})
}

func TestRunNoValidHostWithoutActionSkipsEvent(t *testing.T) {
	st := openSQLite(t)
	mem := bus.NewMem()
	defer mem.Close()
	newInstance(t, st, "i1")
	st.DB.Where("instance_id = ?", "i1").Delete(&store.InstanceAction{})
	runScheduler(t, newTestScheduler(st, mem, "spread"))
	publishAndWait(t, mem, scheduleMsg(t, "i1", 1))
	if inst := reload(t, st, "i1"); inst.VMState != "error" {
		t.Errorf("vm_state = %q, want error", inst.VMState)
	}
	var n int64
	st.DB.Model(&store.InstanceActionEvent{}).Count(&n)
	if n != 0 {
		t.Errorf("%d events recorded without an action", n)
	}
}

// TestRunRedeliveryDoesNotClaimTwice delivers the same request twice.
// Two equal hosts: a second claim would spread to h2.
func TestRunRedeliveryDoesNotClaimTwice(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		mem := bus.NewMem()
		defer mem.Close()
		addHost(t, st, "h1")
		addHost(t, st, "h2")
		newInstance(t, st, "i1")
		runScheduler(t, newTestScheduler(st, mem, "spread"))

		m := scheduleMsg(t, "i1", 1)
		publishAndWait(t, mem, m, m)

		cs := claimsOf(t, st, "i1")
		if len(cs) != 1 || cs[0].Host != "h1" {
			t.Fatalf("claims = %+v, want one on h1", cs)
		}
		if inst := reload(t, st, "i1"); inst.Host != "h1" || inst.TaskState != "spawning" {
			t.Errorf("instance host/task = %q/%q", inst.Host, inst.TaskState)
		}
		// The redelivery re-sends the build to the same host (the first
		// delivery might have died before sending it), never elsewhere.
		if n := len(builds(t, mem, "h1")); n != 2 {
			t.Errorf("%d builds on h1, want 2", n)
		}
		if n := len(mem.Sent(bus.ComputeQueue("h2"))); n != 0 {
			t.Errorf("%d messages to h2", n)
		}
		if evs := eventsOf(t, st, "i1"); len(evs) != 1 {
			t.Errorf("%d schedule events, want 1", len(evs))
		}
	})
}

func TestRunIgnoresInstancesNotWaitingForAHost(t *testing.T) {
	st := openSQLite(t)
	mem := bus.NewMem()
	defer mem.Close()
	addHost(t, st, "h1")
	now := time.Now().UTC()
	newInstance(t, st, "deleted", func(i *store.Instance) { i.DeletedAt = &now })
	newInstance(t, st, "active", func(i *store.Instance) { i.VMState, i.TaskState = "active", "" })
	newInstance(t, st, "stale", func(i *store.Instance) { i.BuildAttempts = 2 })
	// Placed, but its claim is gone (the conductor released it): nothing
	// to re-send.
	newInstance(t, st, "unclaimed", func(i *store.Instance) { i.Host, i.TaskState = "h1", "spawning" })
	runScheduler(t, newTestScheduler(st, mem, "spread"))

	publishAndWait(t, mem, scheduleMsg(t, "deleted", 1), scheduleMsg(t, "active", 1), scheduleMsg(t, "stale", 1),
		scheduleMsg(t, "unclaimed", 1), scheduleMsg(t, "missing", 1))

	var n int64
	st.DB.Model(&store.Claim{}).Count(&n)
	if n != 0 {
		t.Errorf("%d claims made", n)
	}
	if k := len(mem.Sent(bus.ComputeQueue("h1"))); k != 0 {
		t.Errorf("%d builds sent", k)
	}
	if inst := reload(t, st, "stale"); inst.TaskState != "scheduling" || inst.Host != "" {
		t.Errorf("stale request changed the instance: %q on %q", inst.TaskState, inst.Host)
	}
}

func TestRunRetryAvoidsTriedHosts(t *testing.T) {
	st := openSQLite(t)
	mem := bus.NewMem()
	defer mem.Close()
	addHost(t, st, "h1", capacity(64, 65536, 400))
	addHost(t, st, "h2", capacity(64, 65536, 400))
	addHost(t, st, "h3")
	newInstance(t, st, "i1", func(i *store.Instance) { i.TriedHosts, i.BuildAttempts = "h1", 3 })
	runScheduler(t, newTestScheduler(st, mem, "spread"))

	publishAndWait(t, mem, scheduleMsg(t, "i1", 3, "h2"))

	bs := builds(t, mem, "h3")
	if len(bs) != 1 || bs[0].Attempt != 3 {
		t.Fatalf("builds on h3 = %+v, want one of attempt 3", bs)
	}
	if inst := reload(t, st, "i1"); inst.Host != "h3" {
		t.Errorf("host = %q", inst.Host)
	}
}

// TestRunDropsLeftoverClaims: a delivery that claimed and then died
// leaves a claim; the next delivery may choose another host and must not
// leave the first claim behind.
func TestRunDropsLeftoverClaims(t *testing.T) {
	st := openSQLite(t)
	mem := bus.NewMem()
	defer mem.Close()
	addHost(t, st, "h1")
	addHost(t, st, "h2")
	newInstance(t, st, "i1")
	if err := st.ClaimOnHost(context.Background(), "h1", "i1", store.Resources{VCPUs: 1, MemoryMB: 512, DiskGB: 5}, nil); err != nil {
		t.Fatal(err)
	}
	runScheduler(t, newTestScheduler(st, mem, "spread"))
	publishAndWait(t, mem, scheduleMsg(t, "i1", 1))
	cs := claimsOf(t, st, "i1")
	if len(cs) != 1 || cs[0].Host != "h2" {
		t.Errorf("claims = %+v, want only the one on h2 (roomier than h1 holding the leftover)", cs)
	}
}

func TestRunMissingImageIsAFault(t *testing.T) {
	st := openSQLite(t)
	mem := bus.NewMem()
	defer mem.Close()
	addHost(t, st, "h1")
	newInstance(t, st, "i1")
	st.DB.Where("id = ?", "img-i1").Delete(&store.Image{})
	runScheduler(t, newTestScheduler(st, mem, "spread"))
	publishAndWait(t, mem, scheduleMsg(t, "i1", 1))
	inst := reload(t, st, "i1")
	if inst.VMState != "error" || inst.FaultMessage != "Image img-i1 could not be found." {
		t.Errorf("vm_state %q fault %q", inst.VMState, inst.FaultMessage)
	}
	if cs := claimsOf(t, st, "i1"); len(cs) != 0 {
		t.Errorf("claims = %+v", cs)
	}
}

// failingBus refuses publishes to compute queues.
type failingBus struct{ *bus.Mem }

func (f failingBus) Publish(ctx context.Context, queue string, m bus.Message) error {
	if strings.HasPrefix(queue, "compute.") {
		return errors.New("broker unreachable")
	}
	return f.Mem.Publish(ctx, queue, m)
}

func TestHandlePublishFailureUnplacesAndRetries(t *testing.T) {
	st := openSQLite(t)
	mem := bus.NewMem()
	defer mem.Close()
	addHost(t, st, "h1")
	newInstance(t, st, "i1", func(i *store.Instance) { i.AvailabilityZone = "" })
	s := newTestScheduler(st, failingBus{mem}, "spread")

	_, err := s.Handle(context.Background(), scheduleMsg(t, "i1", 1))
	if !bus.IsRetry(err) {
		t.Fatalf("err = %v, want a Retry error", err)
	}
	if cs := claimsOf(t, st, "i1"); len(cs) != 0 {
		t.Errorf("claims = %+v, want none after the failed publish", cs)
	}
	inst := reload(t, st, "i1")
	if inst.Host != "" || inst.TaskState != "scheduling" || inst.VMState != "building" || inst.AvailabilityZone != "" {
		t.Errorf("instance not put back: host %q task %q vm %q az %q", inst.Host, inst.TaskState, inst.VMState, inst.AvailabilityZone)
	}
	// Once the broker is back the same message places it.
	s.b = mem
	if _, err := s.Handle(context.Background(), scheduleMsg(t, "i1", 1)); err != nil {
		t.Fatal(err)
	}
	if n := len(builds(t, mem, "h1")); n != 1 {
		t.Errorf("%d builds after recovery", n)
	}
}

func TestHandleRejectsUnknownKind(t *testing.T) {
	s := newTestScheduler(openSQLite(t), bus.NewMem(), "")
	m, _ := bus.NewMessage("bogus", struct{}{})
	if _, err := s.Handle(context.Background(), m); err == nil || bus.IsRetry(err) {
		t.Errorf("err = %v, want a final error", err)
	}
}
