package conductor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/migrate"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/scheduler"
	"github.com/capsule-cloud/capsule/store"
)

// The cold-migration tests drive the real conductor (Handle on the
// conductor queue of an in-process bus), the real scheduler and the
// migrate engine against a database, with scripted fake agents consuming
// compute.<host> queues the way the real agent does: MigrationCheck
// first, then the work, then one report.

const stepTimeout = 10 * time.Minute

// fakeClock is the engine's clock, moved by the tests (deadlines).
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeRegistry records the images the engine deletes.
type fakeRegistry struct {
	mu      sync.Mutex
	deleted []string // ref@digest
	fail    int      // the next fail deletions fail
}

func (r *fakeRegistry) DeleteImage(_ context.Context, ref, digest string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return errors.New("registry unavailable")
	}
	r.deleted = append(r.deleted, ref+"@"+digest)
	return nil
}

func (r *fakeRegistry) Deleted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.deleted)
}

// seenWork is one piece of work a fake agent received, with what the
// database said when it arrived (the step must be persisted first).
type seenWork struct {
	Kind     string
	Work     protocol.MigrationWork
	Proceed  bool
	Task     string // the instance's task_state on arrival
	PortHost string // binding host of the instance's first port on arrival
}

// fakeAgent answers migration work on one host.
type fakeAgent struct {
	h    *migHarness
	host string
	stop context.CancelFunc

	mu   sync.Mutex
	seen []seenWork
	fail map[string]string // kind → error to report
	hold map[string]bool   // kind → never report (the agent hangs)
}

func (a *fakeAgent) Seen() []seenWork {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seen)
}

// Did lists the kinds of work the agent was allowed to carry out.
func (a *fakeAgent) Did() []string {
	var out []string
	for _, s := range a.Seen() {
		if s.Proceed {
			out = append(out, s.Kind+"/"+s.Work.Step)
		}
	}
	return out
}

func (a *fakeAgent) Fail(kind, msg string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fail[kind] = msg
}

func (a *fakeAgent) Hold(kind string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hold[kind] = true
}

var eventOf = map[string]string{
	protocol.KindMigrationExport:  "compute_prep_resize",
	protocol.KindMigrationImport:  "compute_finish_resize",
	protocol.KindMigrationCleanup: "compute_cleanup_migration",
	protocol.KindMigrationRestore: "compute_finish_revert_resize",
}

func (a *fakeAgent) handle(ctx context.Context, m bus.Message) (any, error) {
	var w protocol.MigrationWork
	if err := m.Decode(&w); err != nil {
		return nil, err
	}
	seen := seenWork{Kind: m.Kind, Work: w}
	var inst store.Instance
	a.h.st.DB.Where("id = ?", w.InstanceID).Limit(1).Find(&inst)
	seen.Task = string(inst.TaskState)
	var p store.Port
	a.h.st.DB.Where("device_id = ?", w.InstanceID).Order("created_at").Limit(1).Find(&p)
	seen.PortHost = p.BindingHostID

	check, _ := bus.NewMessage(protocol.KindMigrationCheck, protocol.MigrationCheck{MigrationID: w.MigrationID, Host: a.host, Step: w.Step})
	var reply protocol.MigrationCheckReply
	if err := a.h.b.Call(ctx, bus.ConductorQueue, check, &reply); err != nil {
		return nil, bus.Retry(err)
	}
	seen.Proceed = reply.Proceed
	a.mu.Lock()
	a.seen = append(a.seen, seen)
	failMsg, hold := a.fail[m.Kind], a.hold[m.Kind]
	a.mu.Unlock()
	start := time.Now().UTC()
	r := protocol.MigrationReport{RequestID: w.RequestID, MigrationID: w.MigrationID, InstanceID: w.InstanceID,
		Host: a.host, Kind: m.Kind, Step: w.Step, Event: eventOf[m.Kind], Started: start, Finished: start.Add(time.Millisecond)}
	switch {
	case !reply.Proceed:
		r.Skipped, r.Error = true, reply.Reason
	case hold:
		return nil, nil
	case failMsg != "":
		r.Error = failMsg
	default:
		r.OK = true
		switch m.Kind {
		case protocol.KindMigrationPrecopy:
			r.Digest, r.Bytes, r.PowerState = "sha256:"+fmt.Sprintf("%063dp", w.MigrationID), 100000, int(lifecycle.Running)
			a.h.progress(ctx, protocol.MigrationProgress{MigrationID: w.MigrationID, Host: a.host, Step: w.Step, Bytes: 50000})
		case protocol.KindMigrationPrepull:
			r.Bytes = 90000
		case protocol.KindMigrationExport:
			r.Digest, r.Bytes, r.PowerState = "sha256:"+fmt.Sprintf("%064d", w.MigrationID), 4096, int(lifecycle.Shutdown)
			a.h.progress(ctx, protocol.MigrationProgress{MigrationID: w.MigrationID, Host: a.host, Step: w.Step, Bytes: 2048})
		case protocol.KindMigrationImport, protocol.KindMigrationRestore:
			r.PowerState = int(lifecycle.Shutdown)
			if w.Start {
				r.PowerState = int(lifecycle.Running)
			}
			if m.Kind == protocol.KindMigrationImport {
				r.Bytes = 4096
			}
		}
	}
	msg, _ := bus.NewMessage(protocol.KindMigrationReport, r)
	return nil, a.h.b.Publish(ctx, bus.ConductorQueue, msg)
}

type migHarness struct {
	t      *testing.T
	ctx    context.Context
	st     *store.Store
	b      *bus.Mem
	c      *Conductor
	eng    *migrate.Engine
	clock  *fakeClock
	reg    *fakeRegistry
	agents map[string]*fakeAgent
	// precopy: the engine pre-copies (steps precopy and prepull).
	precopy bool
}

// newMigHarness: hosts (4 vCPU/4096 MB/40 GB each, alive by the
// scheduler's clock), a conductor consuming its queue, an agent per host
// listed in up.
func newMigHarness(t *testing.T, st *store.Store, hosts []string, up ...string) *migHarness {
	t.Helper()
	return newMigHarnessWith(t, st, false, hosts, up...)
}

// newPrecopyHarness is newMigHarness with an engine that pre-copies.
func newPrecopyHarness(t *testing.T, st *store.Store, hosts []string, up ...string) *migHarness {
	t.Helper()
	return newMigHarnessWith(t, st, true, hosts, up...)
}

func newMigHarnessWith(t *testing.T, st *store.Store, precopy bool, hosts []string, up ...string) *migHarness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h := &migHarness{t: t, ctx: ctx, st: st, b: bus.NewMem(bus.MemLogger(quietLog())), clock: &fakeClock{t: time.Now().UTC()},
		reg: &fakeRegistry{}, agents: map[string]*fakeAgent{}, precopy: precopy}
	t.Cleanup(func() { h.b.Close() })
	for _, host := range hosts {
		hb := time.Now().UTC()
		svc := store.Service{UUID: "svc-" + host, Host: host, Binary: store.ComputeBinary, Zone: "nova", LastHeartbeat: &hb,
			VCPUs: 4, MemoryMB: 4096, DiskGB: 40, CPUAllocationRatio: 1, RAMAllocationRatio: 1, DiskAllocationRatio: 1}
		if err := st.DB.Create(&svc).Error; err != nil {
			t.Fatal(err)
		}
	}
	h.startConductor(h.b)
	for _, host := range up {
		h.startAgent(host)
	}
	return h
}

// startConductor consumes the conductor queue of b with a new conductor
// and engine on the same database (a restart when called again).
func (h *migHarness) startConductor(b *bus.Mem) {
	h.c = newTestConductor(h.st, b, 3)
	h.eng = migrate.New(migrate.Options{Store: h.st, Bus: b, Scheduler: scheduler.New(h.st, b, config.Scheduler{}, quietLog()),
		Registry: h.reg, RegistryAddress: "registry.test:5050", StepTimeout: stepTimeout, Precopy: h.precopy, Log: quietLog(),
		Now: h.clock.Now, Host: "conductor-1"})
	h.c.SetMigrations(h.eng)
	if err := b.Consume(h.ctx, bus.ConductorQueue, h.c.Handle); err != nil {
		h.t.Fatal(err)
	}
}

func (h *migHarness) startAgent(host string) *fakeAgent {
	a := h.agents[host]
	if a == nil {
		a = &fakeAgent{h: h, host: host, fail: map[string]string{}, hold: map[string]bool{}}
		h.agents[host] = a
	}
	ctx, cancel := context.WithCancel(h.ctx)
	a.stop = cancel
	if err := h.b.Consume(ctx, bus.ComputeQueue(host), a.handle); err != nil {
		h.t.Fatal(err)
	}
	return a
}

func (h *migHarness) progress(ctx context.Context, p protocol.MigrationProgress) {
	msg, _ := bus.NewMessage(protocol.KindMigrationProgress, p)
	_ = h.b.Publish(ctx, bus.ConductorQueue, msg)
}

func (h *migHarness) idle() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 20*time.Second)
	defer cancel()
	if err := h.b.WaitIdle(ctx); err != nil {
		h.t.Fatal(err)
	}
}

// server stores an instance on host with a claim there and one port on
// a VLAN network bound to host.
func (h *migHarness) server(host string, vm lifecycle.VMState) store.Instance {
	h.t.Helper()
	ps := lifecycle.Running
	if vm == lifecycle.Stopped {
		ps = lifecycle.Shutdown
	}
	inst := addInstance(h.t, h.st, state(vm, lifecycle.NoTask), onHost(host), power(ps), func(i *store.Instance) {
		i.FlavorRowID, i.AvailabilityZone, i.ExtraSpecs = 1, "nova", `{"quota:cpu_shares":"1024"}`
	})
	addClaim(h.t, h.st, inst.ID, host)
	ctx := context.Background()
	n := &store.Network{Name: "n-" + inst.ID[:8], ProjectID: "p1", AdminStateUp: true, MTU: 1500,
		NetworkType: store.NetworkTypeVLAN, PhysicalNetwork: "physnet1", SegmentationID: 100 + len(inst.ID)}
	if err := h.st.CreateNetwork(ctx, n, store.VLANRange{}); err != nil {
		h.t.Fatal(err)
	}
	sn := &store.Subnet{NetworkID: n.ID, ProjectID: "p1", IPVersion: 4, CIDR: "10.9.0.0/24"}
	if err := store.ValidateSubnet(sn, true, nil, nil, nil); err != nil {
		h.t.Fatal(err)
	}
	if err := h.st.CreateSubnet(ctx, sn); err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, ProjectID: "p1", DeviceID: inst.ID,
		DeviceOwner: "compute:nova", ComputeBound: true, HostID: host, FixedIPs: []store.FixedIPRequest{{IP: "10.9.0.7"}}}); err != nil {
		h.t.Fatal(err)
	}
	return loadInst(h.t, h.st, inst.ID)
}

func (h *migHarness) begin(inst store.Instance, flavor *store.Flavor, reqID string) *store.Migration {
	h.t.Helper()
	action := "migrate"
	if flavor != nil {
		action = "resize"
	}
	m, err := migrate.Begin(h.ctx, h.st, migrate.BeginRequest{Request: migrate.Request{RequestID: reqID, UserID: "u1", ProjectID: "p1"},
		Instance: &inst, NewFlavor: flavor, Action: action})
	if err != nil {
		h.t.Fatalf("begin: %v", err)
	}
	if err := migrate.Kick(h.ctx, h.b, m.ID); err != nil {
		h.t.Fatal(err)
	}
	return m
}

func (h *migHarness) migration(id uint) store.Migration {
	h.t.Helper()
	var m store.Migration
	if err := h.st.DB.Where("id = ?", id).First(&m).Error; err != nil {
		h.t.Fatal(err)
	}
	return m
}

func (h *migHarness) portHost(id string) string {
	h.t.Helper()
	var p store.Port
	if err := h.st.DB.Where("device_id = ?", id).First(&p).Error; err != nil {
		h.t.Fatal(err)
	}
	return p.BindingHostID
}

func (h *migHarness) claims(id string) map[string]store.Claim {
	h.t.Helper()
	var cs []store.Claim
	if err := h.st.DB.Where("instance_id = ?", id).Find(&cs).Error; err != nil {
		h.t.Fatal(err)
	}
	out := map[string]store.Claim{}
	for _, c := range cs {
		out[c.Host] = c
	}
	return out
}

func eventNames(evs []store.InstanceActionEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Event+"@"+e.Host+"="+e.Result)
	}
	return out
}

func status(inst store.Instance) string {
	return lifecycle.Status(inst.VMState, inst.TaskState)
}

// TestColdMigrationConfirm: a running server moves h1 → h2 (the only
// other host), keeping its port, waits in VERIFY_RESIZE, and the confirm
// removes the source copy, the tag and the source claim.
func TestColdMigrationConfirm(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		h := newMigHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
		inst := h.server("h1", lifecycle.Active)
		m := h.begin(inst, nil, "req-migrate")
		h.idle()

		got := h.migration(m.ID)
		ref := "registry.test:5050/capsule/migrations:" + m.UUID
		if got.Step != string(migrate.StepFinished) || got.Status != lifecycle.MigrationFinished || got.DestCompute != "h2" ||
			got.SnapshotRef != ref || got.SnapshotDigest == "" || got.ImageBytes != 4096 || got.PushedBytes != 4096 ||
			got.PulledBytes != 4096 || got.MigrationType != "migration" || got.SourceVMState != "active" {
			t.Fatalf("migration after import = %+v", got)
		}
		cur := loadInst(t, st, inst.ID)
		if cur.Host != "h2" || status(cur) != "VERIFY_RESIZE" || cur.PowerState != int(lifecycle.Running) || cur.VCPUs != 1 {
			t.Errorf("instance = host %s %s power %d", cur.Host, status(cur), cur.PowerState)
		}
		if ph := h.portHost(inst.ID); ph != "h2" {
			t.Errorf("port bound to %q, want h2", ph)
		}
		if cl := h.claims(inst.ID); len(cl) != 2 || cl["h2"].MigrationID == nil || *cl["h2"].MigrationID != m.ID {
			t.Errorf("claims = %+v, want the source's and the target's (with the migration id)", cl)
		}
		// Each step was persisted before its work went out.
		src, dst := h.agents["h1"].Seen(), h.agents["h2"].Seen()
		if len(src) != 1 || src[0].Kind != protocol.KindMigrationExport || !src[0].Proceed || src[0].Work.Ref != ref ||
			src[0].Task != string(lifecycle.ResizeMigrating) || src[0].PortHost != "h1" || src[0].Work.Deadline.IsZero() {
			t.Fatalf("source saw %+v", src)
		}
		if len(dst) != 1 || dst[0].Kind != protocol.KindMigrationImport || !dst[0].Proceed || dst[0].Task != string(lifecycle.ResizeFinish) ||
			dst[0].PortHost != "h2" || !dst[0].Work.Start || dst[0].Work.Spec.ImageRef != ref || len(dst[0].Work.Spec.NICs) != 1 ||
			dst[0].Work.Spec.NICs[0].IPs[0].Address != "10.9.0.7" || dst[0].Work.Spec.ExtraSpecs["quota:cpu_shares"] != "1024" {
			t.Fatalf("target saw %+v", dst)
		}
		if evs := eventNames(eventsOf(t, st, inst.ID, "req-migrate")); !slices.Equal(evs, []string{
			"conductor_migrate_server@conductor-1=Success", "compute_prep_resize@h1=Success", "compute_finish_resize@h2=Success"}) {
			t.Errorf("events = %v", evs)
		}

		// Confirm: ACTIVE at once (the API answers 204), then the cleanup.
		if _, err := migrate.Confirm(h.ctx, st, &cur, migrate.Request{RequestID: "req-confirm", UserID: "u1", ProjectID: "p1"}); err != nil {
			t.Fatal(err)
		}
		if cur := loadInst(t, st, inst.ID); status(cur) != "ACTIVE" || cur.Host != "h2" || cur.ResizeFromState != "" {
			t.Errorf("after confirm: %s on %s", status(cur), cur.Host)
		}
		if err := migrate.Kick(h.ctx, h.b, m.ID); err != nil {
			t.Fatal(err)
		}
		h.idle()
		got = h.migration(m.ID)
		if got.Status != lifecycle.MigrationConfirmed || got.Step != string(migrate.StepDone) {
			t.Errorf("migration after confirm: %s / %s", got.Status, got.Step)
		}
		if did := h.agents["h1"].Did(); !slices.Equal(did, []string{"migration_export/exporting", "migration_cleanup/confirming"}) {
			t.Errorf("source did %v", did)
		}
		if s := h.agents["h1"].Seen(); s[1].Work.Ref != ref {
			t.Errorf("source cleanup without the ref: %+v", s[1].Work)
		}
		if del := h.reg.Deleted(); !slices.Equal(del, []string{ref + "@" + got.SnapshotDigest, ref + "-pre@"}) {
			t.Errorf("registry deletions = %v", del)
		}
		if cl := h.claims(inst.ID); len(cl) != 1 || cl["h2"].MigrationID != nil {
			t.Errorf("claims after confirm = %+v, want only h2's", cl)
		}
		if evs := eventNames(eventsOf(t, st, inst.ID, "req-confirm")); !slices.Equal(evs, []string{"compute_cleanup_migration@h1=Success"}) {
			t.Errorf("confirm events = %v", evs)
		}
		// Settled: a new migration may begin (back to h1).
		cur = loadInst(t, st, inst.ID)
		if _, err := migrate.Begin(h.ctx, st, migrate.BeginRequest{Request: migrate.Request{RequestID: "req-2"}, Instance: &cur}); err != nil {
			t.Errorf("second migration refused: %v", err)
		}
	})
}

func addFlavor(t *testing.T, st *store.Store, id string, vcpus, mem, disk int) *store.Flavor {
	t.Helper()
	f := &store.Flavor{FlavorID: id, Name: "m1." + id, VCPUs: vcpus, MemoryMB: mem, RootGB: disk, IsPublic: true,
		ExtraSpecs: []store.FlavorExtraSpec{{Key: "quota:cpu_shares", Value: "2048"}}}
	if err := st.DB.Create(f).Error; err != nil {
		t.Fatal(err)
	}
	return f
}

// TestColdResizeRevert: a stopped server resized onto another host (h1
// lacks room), then reverted: the target copy goes, the source comes back
// with the old flavor, still stopped; the target claim goes.
func TestColdResizeRevert(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		h := newMigHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
		inst := h.server("h1", lifecycle.Stopped)
		big := addFlavor(t, st, "big", 2, 2048, 10)
		m := h.begin(inst, big, "req-resize")
		h.idle()

		cur := loadInst(t, st, inst.ID)
		if got := h.migration(m.ID); got.Step != string(migrate.StepFinished) || got.MigrationType != "resize" || got.NewFlavorID != big.ID {
			t.Fatalf("migration = %+v", got)
		}
		if cur.Host != "h2" || status(cur) != "VERIFY_RESIZE" || cur.VCPUs != 2 || cur.FlavorID != "big" || cur.OldFlavorID != "f1" ||
			cur.PowerState != int(lifecycle.Shutdown) {
			t.Fatalf("instance = %s on %s, %d vCPU flavor %s (old %s) power %d", status(cur), cur.Host, cur.VCPUs, cur.FlavorID, cur.OldFlavorID, cur.PowerState)
		}
		if cl := h.claims(inst.ID); cl["h2"].VCPUs != 2 || cl["h2"].MemoryMB != 2048 || cl["h1"].VCPUs != 1 {
			t.Errorf("claims = %+v", cl)
		}
		imp := h.agents["h2"].Seen()[0].Work
		if imp.Start || imp.Spec.VCPUs != 2 || imp.Spec.MemoryMB != 2048 || imp.Spec.ExtraSpecs["quota:cpu_shares"] != "2048" {
			t.Errorf("import work = %+v", imp)
		}

		if _, err := migrate.Revert(h.ctx, st, &cur, migrate.Request{RequestID: "req-revert"}); err != nil {
			t.Fatal(err)
		}
		if cur := loadInst(t, st, inst.ID); status(cur) != "REVERT_RESIZE" {
			t.Errorf("after revert request: %s", status(cur))
		}
		if err := migrate.Kick(h.ctx, h.b, m.ID); err != nil {
			t.Fatal(err)
		}
		h.idle()

		got := h.migration(m.ID)
		if got.Status != lifecycle.MigrationReverted || got.Step != string(migrate.StepDone) || got.Rollback {
			t.Errorf("migration after revert: %+v", got)
		}
		cur = loadInst(t, st, inst.ID)
		if cur.Host != "h1" || status(cur) != "SHUTOFF" || cur.VCPUs != 1 || cur.MemoryMB != 512 || cur.FlavorID != "f1" ||
			cur.OldFlavorID != "" || cur.FaultMessage != "" || cur.ExtraSpecs != `{"quota:cpu_shares":"1024"}` {
			t.Errorf("instance after revert = %s on %s, %d vCPU %d MB flavor %s (old %q) fault %q specs %s", status(cur), cur.Host,
				cur.VCPUs, cur.MemoryMB, cur.FlavorID, cur.OldFlavorID, cur.FaultMessage, cur.ExtraSpecs)
		}
		if ph := h.portHost(inst.ID); ph != "h1" {
			t.Errorf("port bound to %s after revert", ph)
		}
		if cl := h.claims(inst.ID); len(cl) != 1 || cl["h1"].VCPUs != 1 {
			t.Errorf("claims after revert = %+v, want only h1's", cl)
		}
		if did := h.agents["h2"].Did(); !slices.Equal(did, []string{"migration_import/importing", "migration_cleanup/revert_target"}) {
			t.Errorf("target did %v", did)
		}
		src := h.agents["h1"].Seen()
		if len(src) != 2 || src[1].Kind != protocol.KindMigrationRestore || src[1].Work.Start || src[1].Work.Spec.VCPUs != 1 ||
			src[1].Work.Spec.ExtraSpecs["quota:cpu_shares"] != "1024" || src[1].PortHost != "h1" {
			t.Errorf("source saw %+v", src)
		}
		if s := h.agents["h2"].Seen(); s[1].Work.Ref != got.SnapshotRef {
			t.Errorf("target cleanup lacks the ref: %+v", s[1].Work)
		}
		if len(h.reg.Deleted()) != 2 { // the server's tag and its pre-copy's
			t.Errorf("registry deletions = %v", h.reg.Deleted())
		}
		if evs := eventNames(eventsOf(t, st, inst.ID, "req-revert")); !slices.Equal(evs, []string{
			"compute_cleanup_migration@h2=Success", "compute_finish_revert_resize@h1=Success"}) {
			t.Errorf("revert events = %v", evs)
		}
	})
}

// TestExportFailureRollsBack: the source cannot export; the server ends
// ACTIVE on its source with a fault, the migration in error.
func TestExportFailureRollsBack(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		h := newMigHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
		h.agents["h1"].Fail(protocol.KindMigrationExport, "instance keeps data in volumes")
		inst := h.server("h1", lifecycle.Active)
		m := h.begin(inst, nil, "req-migrate")
		h.idle()

		got := h.migration(m.ID)
		if got.Status != lifecycle.MigrationError || got.Step != string(migrate.StepDone) || !got.Rollback ||
			got.ErrorMessage != "Migration export on host h1 failed: instance keeps data in volumes" {
			t.Errorf("migration = %+v", got)
		}
		cur := loadInst(t, st, inst.ID)
		if cur.Host != "h1" || status(cur) != "ACTIVE" || cur.PowerState != int(lifecycle.Running) || cur.FaultMessage != got.ErrorMessage {
			t.Errorf("instance = %s on %s power %d fault %q", status(cur), cur.Host, cur.PowerState, cur.FaultMessage)
		}
		if cl := h.claims(inst.ID); len(cl) != 1 || cl["h1"].ID == 0 {
			t.Errorf("claims = %+v, want only h1's", cl)
		}
		if did := h.agents["h1"].Did(); !slices.Equal(did, []string{"migration_export/exporting", "migration_restore/revert_source"}) {
			t.Errorf("source did %v", did)
		}
		if did := h.agents["h2"].Did(); !slices.Equal(did, []string{"migration_cleanup/revert_target"}) {
			t.Errorf("target did %v", did)
		}
		if s := h.agents["h1"].Seen(); !s[1].Work.Start {
			t.Error("restore of a running server without Start")
		}
		evs := eventNames(eventsOf(t, st, inst.ID, "req-migrate"))
		if !slices.Contains(evs, "compute_prep_resize@h1=Error") || !slices.Contains(evs, "compute_finish_revert_resize@h1=Success") {
			t.Errorf("events = %v", evs)
		}
	})
}

// TestImportTimeoutRollsBackWithoutTarget: the target takes the import
// and dies. Past the step deadline the periodic pass rolls back at once:
// the target's cleanup waits in its queue, the source runs again. When
// the target comes back, the import is skipped and the cleanup done.
func TestImportTimeoutRollsBackWithoutTarget(t *testing.T) {
	st := openSQLite(t)
	h := newMigHarness(t, st, []string{"h1", "h2"}, "h1")
	inst := h.server("h1", lifecycle.Active)
	m := h.begin(inst, nil, "req-migrate")
	h.idle()
	if got := h.migration(m.ID); got.Step != string(migrate.StepImporting) {
		t.Fatalf("step %s, want importing (the import waits in h2's queue)", got.Step)
	}
	h.eng.Periodic(h.ctx) // before the deadline: nothing changes
	h.idle()
	if got := h.migration(m.ID); got.Step != string(migrate.StepImporting) {
		t.Fatalf("step %s before the deadline", got.Step)
	}

	h.clock.Add(stepTimeout + time.Second)
	h.eng.Periodic(h.ctx)
	h.idle()
	got := h.migration(m.ID)
	if got.Status != lifecycle.MigrationError || got.Step != string(migrate.StepDone) || !got.Rollback ||
		got.ErrorMessage != "Migration step importing on host h2 timed out after 10m0s." {
		t.Fatalf("migration = %+v", got)
	}
	cur := loadInst(t, st, inst.ID)
	if cur.Host != "h1" || status(cur) != "ACTIVE" || cur.FaultMessage == "" || h.portHost(inst.ID) != "h1" {
		t.Errorf("instance = %s on %s fault %q port %s", status(cur), cur.Host, cur.FaultMessage, h.portHost(inst.ID))
	}
	if cl := h.claims(inst.ID); len(cl) != 1 || cl["h1"].ID == 0 {
		t.Errorf("claims = %+v, want only h1's", cl)
	}
	// The import, then its cleanup. The periodic pass before the
	// deadline may have published the import again (it re-publishes work
	// it sees nothing in flight for, and agents are idempotent), which a
	// loaded machine makes likely: repeats of it are allowed.
	pend := h.b.Pending(bus.ComputeQueue("h2"))
	if kinds := slices.Compact(kindsOf(pend)); !slices.Equal(kinds, []string{protocol.KindMigrationImport, protocol.KindMigrationCleanup}) {
		t.Fatalf("h2's queue holds %d messages: %v, want the import (maybe repeated), then the cleanup", len(pend), kindsOf(pend))
	}

	// h2 comes back.
	a := h.startAgent("h2")
	h.idle()
	// (The agent may take them at once: order does not matter.) Every
	// delivery of the import is refused, the one cleanup allowed.
	var imports, cleanups int
	for _, s := range a.Seen() {
		switch {
		case s.Kind == protocol.KindMigrationImport && !s.Proceed:
			imports++
		case s.Kind == protocol.KindMigrationCleanup && s.Proceed:
			cleanups++
		default:
			t.Errorf("h2 proceeded=%v with %s; want the import refused and the cleanup allowed", s.Proceed, s.Kind)
		}
	}
	if imports == 0 || cleanups != 1 {
		t.Errorf("h2 saw %d refused imports and %d allowed cleanups; want at least one and exactly one", imports, cleanups)
	}
	if evs := eventNames(eventsOf(t, st, inst.ID, "req-migrate")); !slices.Contains(evs, "compute_cleanup_migration@h2=Success") {
		t.Errorf("events = %v, want the late cleanup recorded", evs)
	}
	if after := loadInst(t, st, inst.ID); after.Host != "h1" || status(after) != "ACTIVE" {
		t.Errorf("late reports changed the instance: %s on %s", status(after), after.Host)
	}
}

// TestConductorRestartResumes: the conductor records the export step and
// dies before its message leaves (a new bus: nothing in flight survives);
// the new conductor's start-up pass sends it again and the migration
// completes.
func TestConductorRestartResumes(t *testing.T) {
	st := openSQLite(t)
	h := newMigHarness(t, st, []string{"h1", "h2"}) // no agent on the first bus
	inst := h.server("h1", lifecycle.Active)
	m := h.begin(inst, nil, "req-migrate")
	h.idle()
	if got := h.migration(m.ID); got.Step != string(migrate.StepExporting) || len(h.b.Pending(bus.ComputeQueue("h1"))) != 1 {
		t.Fatalf("before the restart: step %s", got.Step)
	}

	// Restart: new bus, new conductor and engine, same database.
	h.b.Close()
	h.b = bus.NewMem(bus.MemLogger(quietLog()))
	t.Cleanup(func() { h.b.Close() })
	h.startConductor(h.b)
	h.startAgent("h1")
	h.startAgent("h2")
	h.eng.Periodic(h.ctx) // nothing in flight yet for this engine: sent
	h.idle()
	if got := h.migration(m.ID); got.Step != string(migrate.StepFinished) {
		t.Fatalf("after the restart: step %s", got.Step)
	}
	// The resume pass at start-up sends the current step's work again,
	// even if this engine sent it already; the agent's check makes the
	// duplicate harmless.
	if _, err := migrate.Revert(h.ctx, st, ptr(loadInst(t, st, inst.ID)), migrate.Request{RequestID: "req-revert"}); err != nil {
		t.Fatal(err)
	}
	h.agents["h2"].Hold(protocol.KindMigrationCleanup)
	h.eng.Resume(h.ctx)
	h.idle()
	h.eng.Resume(h.ctx)
	h.idle()
	if n := len(h.agents["h2"].Seen()); n != 3 {
		t.Errorf("h2 got %d pieces of work, want import + cleanup twice", n)
	}
	if got := h.migration(m.ID); got.Step != string(migrate.StepRevertTarget) {
		t.Errorf("step %s, want revert_target (the cleanup hangs)", got.Step)
	}
	// The user's revert waits for the target until the deadline, then
	// goes on.
	h.clock.Add(stepTimeout + time.Second)
	h.eng.Periodic(h.ctx)
	h.idle()
	if got := h.migration(m.ID); got.Status != lifecycle.MigrationReverted || got.Step != string(migrate.StepDone) {
		t.Errorf("after the deadline: %s / %s", got.Status, got.Step)
	}
}

func ptr[T any](v T) *T { return &v }

// TestStaleAndDuplicateReportsIgnored: reports of a step the migration
// left, from the wrong host, duplicates and skipped ones change nothing.
func TestStaleAndDuplicateReportsIgnored(t *testing.T) {
	st := openSQLite(t)
	h := newMigHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
	inst := h.server("h1", lifecycle.Active)
	m := h.begin(inst, nil, "req-migrate")
	h.idle()
	before, beforeM := loadInst(t, st, inst.ID), h.migration(m.ID)
	nEvents := len(eventsOf(t, st, inst.ID, "req-migrate"))

	base := protocol.MigrationReport{RequestID: "req-migrate", MigrationID: m.ID, InstanceID: inst.ID, Event: "x",
		Started: time.Now(), Finished: time.Now()}
	rep := func(kind, step, host string, ok, skipped bool) protocol.MigrationReport {
		r := base
		r.Kind, r.Step, r.Host, r.OK, r.Skipped = kind, step, host, ok, skipped
		if !ok {
			r.Error = "boom"
		}
		return r
	}
	for _, r := range []protocol.MigrationReport{
		rep(protocol.KindMigrationExport, "exporting", "h1", true, false),      // duplicate
		rep(protocol.KindMigrationExport, "exporting", "h1", false, false),     // stale failure
		rep(protocol.KindMigrationImport, "importing", "h2", false, false),     // stale failure
		rep(protocol.KindMigrationImport, "importing", "h2", true, false),      // duplicate
		rep(protocol.KindMigrationRestore, "revert_source", "h1", true, false), // step not reached
		rep(protocol.KindMigrationCleanup, "confirming", "h1", true, true),     // skipped
		rep(protocol.KindMigrationImport, "finished", "h2", true, false),       // wrong kind for the step
	} {
		mustSend(t, h.c, protocol.KindMigrationReport, r)
	}
	mustSend(t, h.c, protocol.KindMigrationReport, protocol.MigrationReport{MigrationID: 9999, OK: true, Step: "importing"})
	h.idle()
	sameInstance(t, loadInst(t, st, inst.ID), before)
	after := h.migration(m.ID)
	if after.Step != beforeM.Step || after.Status != beforeM.Status || !after.UpdatedAt.Equal(beforeM.UpdatedAt) || after.Rollback {
		t.Errorf("migration changed: %+v → %+v", beforeM, after)
	}
	if n := len(eventsOf(t, st, inst.ID, "req-migrate")); n != nEvents {
		t.Errorf("%d events after stale reports, want %d", n, nEvents)
	}
	// Progress of a step left is dropped too.
	mustSend(t, h.c, protocol.KindMigrationProgress, protocol.MigrationProgress{MigrationID: m.ID, Host: "h1", Step: "exporting", Bytes: 1})
	if after := h.migration(m.ID); after.PushedBytes != beforeM.PushedBytes {
		t.Errorf("pushed bytes %d after a stale progress", after.PushedBytes)
	}
}

// TestExportProgressAfterItsReport: a progress message of the export that
// is handled after the export's report was recorded (the report and the
// progress are handled concurrently) does not add its bytes on top of the
// export's total again.
func TestExportProgressAfterItsReport(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		h := newMigHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
		h.agents["h1"].Hold(protocol.KindMigrationExport)
		inst := h.server("h1", lifecycle.Active)
		m := h.begin(inst, nil, "req-migrate")
		h.idle()
		if got := h.migration(m.ID); got.Step != "exporting" {
			t.Fatalf("step %s, want exporting", got.Step)
		}
		// The export's report is recorded; the move to importing has not
		// happened yet.
		if err := st.DB.Model(&store.Migration{}).Where("id = ?", m.ID).
			Updates(map[string]any{"snapshot_digest": "sha256:1", "image_bytes": 4096, "pushed_bytes": 4096}).Error; err != nil {
			t.Fatal(err)
		}
		if err := h.eng.OnProgress(h.ctx, protocol.MigrationProgress{MigrationID: m.ID, Host: "h1", Step: "exporting", Bytes: 2048}); err != nil {
			t.Fatal(err)
		}
		if got := h.migration(m.ID); got.PushedBytes != 4096 || got.ImageBytes != 4096 {
			t.Errorf("pushed %d, image %d bytes after a late export progress, want 4096 and 4096", got.PushedBytes, got.ImageBytes)
		}
	})
}

// TestNoValidHost: with no other host (or a requested host that is full)
// the migration ends in error and the server is back as it was.
func TestNoValidHost(t *testing.T) {
	st := openSQLite(t)
	h := newMigHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
	inst := h.server("h1", lifecycle.Active)
	huge := addFlavor(t, st, "huge", 8, 2048, 10) // h2 has 4 vCPUs
	m := h.begin(inst, huge, "req-resize")
	h.idle()

	got := h.migration(m.ID)
	if got.Status != lifecycle.MigrationError || got.Step != string(migrate.StepDone) || got.ErrorMessage != scheduler.NoValidHostMessage {
		t.Errorf("migration = %+v", got)
	}
	cur := loadInst(t, st, inst.ID)
	if status(cur) != "ACTIVE" || cur.Host != "h1" || cur.VCPUs != 1 || cur.FlavorID != "f1" || cur.OldFlavorID != "" ||
		cur.FaultMessage != scheduler.NoValidHostMessage {
		t.Errorf("instance = %s on %s, %d vCPU flavor %s (old %q), fault %q", status(cur), cur.Host, cur.VCPUs, cur.FlavorID, cur.OldFlavorID, cur.FaultMessage)
	}
	if cl := h.claims(inst.ID); len(cl) != 1 {
		t.Errorf("claims = %+v", cl)
	}
	if evs := eventNames(eventsOf(t, st, inst.ID, "req-resize")); !slices.Equal(evs, []string{"conductor_migrate_server@conductor-1=Error"}) {
		t.Errorf("events = %v", evs)
	}
	if len(h.agents["h1"].Seen())+len(h.agents["h2"].Seen()) != 0 {
		t.Error("agents got work for a migration without a target")
	}

	// A requested host is the only candidate: h1 itself never is.
	m2, err := migrate.Begin(h.ctx, st, migrate.BeginRequest{Request: migrate.Request{RequestID: "req-2"}, Instance: &cur, Host: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.eng.Advance(h.ctx, m2.ID); err != nil {
		t.Fatal(err)
	}
	h.idle()
	if got := h.migration(m2.ID); got.Status != lifecycle.MigrationError {
		t.Errorf("migration to the source itself: %s", got.Status)
	}
}

// TestBeginRefusedWhileMigrating: one migration at a time.
func TestBeginRefusedWhileMigrating(t *testing.T) {
	st := openSQLite(t)
	h := newMigHarness(t, st, []string{"h1", "h2"}, "h1")
	inst := h.server("h1", lifecycle.Active)
	h.begin(inst, nil, "req-1")
	h.idle()
	// A stale copy of the instance (task none) still meets the active
	// migration.
	_, err := migrate.Begin(h.ctx, st, migrate.BeginRequest{Request: migrate.Request{RequestID: "req-2"}, Instance: &inst})
	if !errors.Is(err, migrate.ErrStateChanged) {
		t.Errorf("second begin: %v, want ErrStateChanged", err)
	}
	cur := loadInst(t, st, inst.ID)
	var ce *lifecycle.ConflictError
	if _, err := migrate.Begin(h.ctx, st, migrate.BeginRequest{Instance: &cur}); !errors.As(err, &ce) {
		t.Errorf("begin in task %s: %v, want a ConflictError", cur.TaskState, err)
	}
	if _, err := migrate.Pending(h.ctx, st, inst.ID); !errors.Is(err, migrate.ErrNoPending) {
		t.Errorf("pending while importing: %v", err)
	}
	if _, err := migrate.Confirm(h.ctx, st, &cur, migrate.Request{}); !errors.Is(err, migrate.ErrNoPending) {
		t.Errorf("confirm while importing: %v", err)
	}
}

// TestInstanceDeletedMidMigration: deleting the server while the target
// imports ends the migration: both hosts clean up, nothing is left.
func TestInstanceDeletedMidMigration(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		h := newMigHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
		h.agents["h2"].Hold(protocol.KindMigrationImport)
		inst := h.server("h1", lifecycle.Active)
		m := h.begin(inst, nil, "req-migrate")
		h.idle()
		if got := h.migration(m.ID); got.Step != string(migrate.StepImporting) {
			t.Fatalf("step %s", got.Step)
		}
		// The API's delete: task deleting, the source agent deletes and
		// reports.
		st.DB.Model(&store.Instance{}).Where("id = ?", inst.ID).Update("task_state", string(lifecycle.Deleting))
		mustSend(t, h.c, protocol.KindInstanceReport, protocol.InstanceReport{RequestID: "req-del", InstanceID: inst.ID,
			Host: "h1", Action: lifecycle.ActDelete, OK: true})
		h.idle()

		got := h.migration(m.ID)
		if got.Status != lifecycle.MigrationError || got.Step != string(migrate.StepDone) {
			t.Errorf("migration = %s / %s", got.Status, got.Step)
		}
		if did := h.agents["h1"].Did(); !slices.Contains(did, "migration_cleanup/abandoned") {
			t.Errorf("source did %v", did)
		}
		if did := h.agents["h2"].Did(); !slices.Contains(did, "migration_cleanup/abandoned") {
			t.Errorf("target did %v", did)
		}
		if len(h.reg.Deleted()) != 2 { // the server's tag and its pre-copy's
			t.Errorf("registry deletions = %v", h.reg.Deleted())
		}
		if cl := h.claims(inst.ID); len(cl) != 0 {
			t.Errorf("claims left: %+v", cl)
		}
		var ports int64
		st.DB.Model(&store.Port{}).Where("device_id = ?", inst.ID).Count(&ports)
		if ports != 0 {
			t.Errorf("%d ports still on the deleted instance", ports)
		}
	})
}

// TestTagDeletionRetried: a registry that refuses the delete leaves the
// migration settled but at its tag step; the periodic pass retries.
func TestTagDeletionRetried(t *testing.T) {
	st := openSQLite(t)
	h := newMigHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
	h.reg.fail = 1
	inst := h.server("h1", lifecycle.Active)
	m := h.begin(inst, nil, "req-migrate")
	h.idle()
	if _, err := migrate.Confirm(h.ctx, st, ptr(loadInst(t, st, inst.ID)), migrate.Request{RequestID: "req-confirm"}); err != nil {
		t.Fatal(err)
	}
	if err := migrate.Kick(h.ctx, h.b, m.ID); err != nil {
		t.Fatal(err)
	}
	h.idle()
	if got := h.migration(m.ID); got.Status != lifecycle.MigrationConfirmed || got.Step != string(migrate.StepDeleteTag) {
		t.Fatalf("after a failed delete: %s / %s", got.Status, got.Step)
	}
	h.eng.Periodic(h.ctx)
	if got := h.migration(m.ID); got.Step != string(migrate.StepDone) || len(h.reg.Deleted()) != 2 {
		t.Errorf("after the retry: %s, deletions %v", got.Step, h.reg.Deleted())
	}
}

// TestMigrationCheckAnswers: the conductor's answers, step by step.
func TestMigrationCheckAnswers(t *testing.T) {
	st := openSQLite(t)
	h := newMigHarness(t, st, []string{"h1", "h2", "h3"})
	inst := h.server("h1", lifecycle.Active)
	m, err := migrate.Begin(h.ctx, st, migrate.BeginRequest{Request: migrate.Request{RequestID: "r"}, Instance: &inst, Host: "h2"})
	if err != nil {
		t.Fatal(err)
	}
	check := func(step, host string) bool {
		t.Helper()
		reply := mustSend(t, h.c, protocol.KindMigrationCheck, protocol.MigrationCheck{MigrationID: m.ID, Host: host, Step: step})
		r, ok := reply.(protocol.MigrationCheckReply)
		if !ok {
			t.Fatalf("reply %T", reply)
		}
		return r.Proceed
	}
	if check("exporting", "h1") {
		t.Error("export allowed while scheduling")
	}
	if err := h.eng.Advance(h.ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if got := h.migration(m.ID); got.DestCompute != "h2" || got.Step != "exporting" {
		t.Fatalf("requested host not used: %+v", got)
	}
	for _, c := range []struct {
		step, host string
		want       bool
	}{
		{"exporting", "h1", true}, {"exporting", "h2", false}, {"importing", "h2", false},
		{"revert_target", "h2", false}, {"confirming", "h1", false}, {"abandoned", "h1", false},
	} {
		if got := check(c.step, c.host); got != c.want {
			t.Errorf("check %s from %s = %v, want %v", c.step, c.host, got, c.want)
		}
	}
	if got := (protocol.MigrationCheckReply{}); mustSend(t, h.c, protocol.KindMigrationCheck,
		protocol.MigrationCheck{MigrationID: 424242, Host: "h1", Step: "exporting"}).(protocol.MigrationCheckReply).Proceed != got.Proceed {
		t.Error("unknown migration allowed")
	}
	// Past the deadline the export is refused (the conductor rolls back).
	h.clock.Add(stepTimeout + time.Second)
	if check("exporting", "h1") {
		t.Error("export allowed past its deadline")
	}
	h.eng.Periodic(h.ctx) // rollback: the target cleanup is not waited for
	if got := h.migration(m.ID); got.Step != "revert_source" {
		t.Fatalf("step %s, want revert_source", got.Step)
	}
	for _, c := range []struct {
		step, host string
		want       bool
	}{
		{"revert_target", "h2", true}, {"revert_target", "h3", false}, {"revert_source", "h1", true},
		{"revert_source", "h2", false}, {"exporting", "h1", false}, {"importing", "h2", false},
	} {
		if got := check(c.step, c.host); got != c.want {
			t.Errorf("during rollback: check %s from %s = %v, want %v", c.step, c.host, got, c.want)
		}
	}
	// A newer migration of the instance makes an old late cleanup unsafe.
	if err := st.DB.Create(&store.Migration{UUID: "newer", InstanceID: inst.ID, Step: "done", Status: "error"}).Error; err != nil {
		t.Fatal(err)
	}
	if check("revert_target", "h2") {
		t.Error("late cleanup allowed despite a newer migration")
	}
}

// migVolumes attaches a local volume (its data on host) and a shared one
// to instance id.
func migVolumes(t *testing.T, st *store.Store, id, host string) {
	t.Helper()
	addVolume(t, st, "v-loc", host, store.VolumeInUse)
	if err := st.DB.Create(&store.Volume{ID: "v-sh", ProjectID: "p1", SizeGB: 2, Status: store.VolumeInUse, Backend: protocol.BackendShared,
		Host: "h9", CreatedAt: testNow}).Error; err != nil {
		t.Fatal(err)
	}
	for _, a := range []store.VolumeAttachment{
		{ID: "a-loc", VolumeID: "v-loc", InstanceID: id, Host: host, MountPath: "/data", Status: store.AttachmentAttached},
		{ID: "a-sh", VolumeID: "v-sh", InstanceID: id, Host: host, MountPath: "/mnt/v-sh", Status: store.AttachmentAttached},
	} {
		if err := st.DB.Create(&a).Error; err != nil {
			t.Fatal(err)
		}
	}
}

func volumeHosts(t *testing.T, st *store.Store) (vol, locAtt, shAtt string) {
	t.Helper()
	v, err := store.GetVolume(st.DB, "v-loc")
	if err != nil {
		t.Fatal(err)
	}
	var a, b store.VolumeAttachment
	st.DB.Where("id = ?", "a-loc").First(&a)
	st.DB.Where("id = ?", "a-sh").First(&b)
	return v.Host, a.Host, b.Host
}

// TestColdMigrationMovesVolumes: the source pushes the server's local
// volume and the target pulls it (shared ones are only mounted: the spec
// carries both); the volume stays the source's until the confirm, which
// moves it and the attachments to the target, has the source's copy
// deleted and the volume's transfer tag removed. A revert deletes the
// target's copy and keeps the volume on the source.
func TestColdMigrationMovesVolumes(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		h := newMigHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
		inst := h.server("h1", lifecycle.Active)
		migVolumes(t, st, inst.ID, "h1")
		m := h.begin(inst, nil, "req-migrate")
		h.idle()
		got := h.migration(m.ID)
		vref := "registry.test:5050/capsule/volumes/v-loc:" + m.UUID
		if got.Step != string(migrate.StepFinished) || got.VolumeIDs != "v-loc" {
			t.Fatalf("migration = %+v", got)
		}
		exp, imp := h.agents["h1"].Seen()[0].Work, h.agents["h2"].Seen()[0].Work
		if len(exp.VolumeRefs) != 1 || exp.VolumeRefs["v-loc"] != vref || len(imp.VolumeRefs) != 1 || imp.VolumeRefs["v-loc"] != vref {
			t.Fatalf("export refs %v, import refs %v", exp.VolumeRefs, imp.VolumeRefs)
		}
		if len(imp.Spec.Volumes) != 2 {
			t.Fatalf("import spec volumes %+v", imp.Spec.Volumes)
		}
		if vh, la, sa := volumeHosts(t, st); vh != "h1" || la != "h1" || sa != "h1" {
			t.Errorf("in VERIFY_RESIZE: volume on %s, attachments on %s and %s; want all h1 until the confirm", vh, la, sa)
		}
		cur := loadInst(t, st, inst.ID)
		if _, err := migrate.Confirm(h.ctx, st, &cur, migrate.Request{RequestID: "req-confirm"}); err != nil {
			t.Fatal(err)
		}
		if err := migrate.Kick(h.ctx, h.b, m.ID); err != nil {
			t.Fatal(err)
		}
		h.idle()
		if vh, la, sa := volumeHosts(t, st); vh != "h2" || la != "h2" || sa != "h2" {
			t.Errorf("after confirm: volume on %s, attachments on %s and %s; want all h2", vh, la, sa)
		}
		if s := h.agents["h1"].Seen(); len(s) != 2 || !slices.Equal(s[1].Work.DropVolumes, []string{"v-loc"}) {
			t.Errorf("source cleanup %+v, want v-loc dropped", s)
		}
		if del := h.reg.Deleted(); len(del) != 3 || del[2] != vref+"@" {
			t.Errorf("registry deletions = %v, want the volume's tag too", del)
		}

		// Back to h1, reverted: the volume stays on h2, h1's copy goes.
		cur = loadInst(t, st, inst.ID)
		m2 := h.begin(cur, nil, "req-back")
		h.idle()
		if got := h.migration(m2.ID); got.Step != string(migrate.StepFinished) || got.VolumeIDs != "v-loc" {
			t.Fatalf("second migration = %+v", got)
		}
		cur = loadInst(t, st, inst.ID)
		if _, err := migrate.Revert(h.ctx, st, &cur, migrate.Request{RequestID: "req-revert"}); err != nil {
			t.Fatal(err)
		}
		if err := migrate.Kick(h.ctx, h.b, m2.ID); err != nil {
			t.Fatal(err)
		}
		h.idle()
		if vh, la, _ := volumeHosts(t, st); vh != "h2" || la != "h2" {
			t.Errorf("after revert: volume on %s, attachment on %s; want h2", vh, la)
		}
		src := h.agents["h1"].Seen()
		last := src[len(src)-1]
		if last.Kind != protocol.KindMigrationCleanup || last.Work.Step != string(migrate.StepRevertTarget) || !slices.Equal(last.Work.DropVolumes, []string{"v-loc"}) {
			t.Errorf("revert's cleanup on h1 = %+v, want v-loc dropped", last)
		}
		if s := h.agents["h2"].Seen(); s[len(s)-1].Kind != protocol.KindMigrationRestore {
			t.Errorf("h2 last saw %+v", s[len(s)-1])
		}
	})
}

// TestDeletedMidMigrationDropsVolumeCopy: a server deleted while its
// volume was being copied: the host the volume does not live on deletes
// its copy, the other keeps the volume (it outlives the server).
func TestDeletedMidMigrationDropsVolumeCopy(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		h := newMigHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
		h.agents["h2"].Hold(protocol.KindMigrationImport)
		inst := h.server("h1", lifecycle.Active)
		migVolumes(t, st, inst.ID, "h1")
		m := h.begin(inst, nil, "req-migrate")
		h.idle()
		st.DB.Model(&store.Instance{}).Where("id = ?", inst.ID).Update("task_state", string(lifecycle.Deleting))
		mustSend(t, h.c, protocol.KindInstanceReport, protocol.InstanceReport{RequestID: "req-del", InstanceID: inst.ID,
			Host: "h1", Action: lifecycle.ActDelete, OK: true})
		h.idle()
		if got := h.migration(m.ID); got.Step != string(migrate.StepDone) {
			t.Fatalf("migration step %s", got.Step)
		}
		drops := map[string][]string{}
		for _, host := range []string{"h1", "h2"} {
			for _, s := range h.agents[host].Seen() {
				if s.Work.Step == string(migrate.StepAbandoned) {
					drops[host] = s.Work.DropVolumes
				}
			}
		}
		if len(drops["h1"]) != 0 || !slices.Equal(drops["h2"], []string{"v-loc"}) {
			t.Errorf("copies dropped %v, want only h2's", drops)
		}
		if del := h.reg.Deleted(); len(del) != 3 {
			t.Errorf("registry deletions = %v, want the server's (and its pre-copy's) and the volume's tags", del)
		}
	})
}

// TestPrecopyMigration: with pre-copies on, the source copies the
// running server first (precopy), the target pulls that (prepull), then
// the export and import run as without; every step is persisted before
// its work leaves, the server stays ACTIVE on its source meanwhile, the
// bytes add up, and both tags go at the end.
func TestPrecopyMigration(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		h := newPrecopyHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
		inst := h.server("h1", lifecycle.Active)
		m := h.begin(inst, nil, "req-migrate")
		h.idle()

		got := h.migration(m.ID)
		ref := "registry.test:5050/capsule/migrations:" + m.UUID
		if got.Step != string(migrate.StepFinished) || got.ImageBytes != 100000+4096 || got.PushedBytes != 100000+4096 ||
			got.PulledBytes != 90000 {
			t.Fatalf("migration after import = %+v", got)
		}
		src, dst := h.agents["h1"].Seen(), h.agents["h2"].Seen()
		if len(src) != 2 || src[0].Kind != protocol.KindMigrationPrecopy || src[0].Work.Step != string(migrate.StepPrecopy) ||
			!src[0].Proceed || src[0].Work.PreRef != ref+"-pre" || src[0].Task != string(lifecycle.ResizeMigrating) ||
			src[0].PortHost != "h1" || src[0].Work.Deadline.IsZero() {
			t.Fatalf("source saw %+v", src)
		}
		if src[1].Kind != protocol.KindMigrationExport || !src[1].Proceed || src[1].Work.PreRef != ref+"-pre" || src[1].Work.Ref != ref {
			t.Fatalf("source's second work %+v", src[1])
		}
		if len(dst) != 2 || dst[0].Kind != protocol.KindMigrationPrepull || dst[0].Work.Step != string(migrate.StepPrepull) ||
			!dst[0].Proceed || dst[0].Work.PreRef != ref+"-pre" || dst[0].PortHost != "h1" || dst[0].Task != string(lifecycle.ResizeMigrating) {
			t.Fatalf("target saw %+v", dst)
		}
		if dst[1].Kind != protocol.KindMigrationImport || dst[1].Work.PreRef != ref+"-pre" || dst[1].PortHost != "h2" {
			t.Fatalf("target's second work %+v", dst[1])
		}
		cur := loadInst(t, st, inst.ID)
		if cur.Host != "h2" || status(cur) != "VERIFY_RESIZE" {
			t.Errorf("instance = host %s %s", cur.Host, status(cur))
		}
		// Pre-copy and pre-pull record no instance-action events.
		if evs := eventNames(eventsOf(t, st, inst.ID, "req-migrate")); !slices.Equal(evs, []string{
			"conductor_migrate_server@conductor-1=Success", "compute_prep_resize@h1=Success", "compute_finish_resize@h2=Success"}) {
			t.Errorf("events = %v", evs)
		}
		if _, err := migrate.Confirm(h.ctx, st, &cur, migrate.Request{RequestID: "req-confirm", UserID: "u1", ProjectID: "p1"}); err != nil {
			t.Fatal(err)
		}
		if err := migrate.Kick(h.ctx, h.b, m.ID); err != nil {
			t.Fatal(err)
		}
		h.idle()
		got = h.migration(m.ID)
		if got.Step != string(migrate.StepDone) || got.Status != lifecycle.MigrationConfirmed {
			t.Errorf("after confirm: %s / %s", got.Status, got.Step)
		}
		if del := h.reg.Deleted(); !slices.Equal(del, []string{ref + "@" + got.SnapshotDigest, ref + "-pre@"}) {
			t.Errorf("registry deletions = %v", del)
		}
		if s := h.agents["h1"].Seen(); len(s) != 3 || s[2].Work.PreRef != ref+"-pre" {
			t.Errorf("source cleanup without the pre-copy's ref: %+v", s)
		}
	})
}

// TestPrecopyFailuresRollBack: a failed pre-copy or pre-pull rolls back
// like a failed export: the target cleans up, the source (never stopped)
// is restored, the server is ACTIVE there with the fault, both tags go.
func TestPrecopyFailuresRollBack(t *testing.T) {
	for _, tc := range []struct{ host, kind, want string }{
		{"h1", protocol.KindMigrationPrecopy, "Migration pre-copy on host h1 failed: registry unreachable"},
		{"h2", protocol.KindMigrationPrepull, "Migration pre-pull on host h2 failed: registry unreachable"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			st := openSQLite(t)
			h := newPrecopyHarness(t, st, []string{"h1", "h2"}, "h1", "h2")
			h.agents[tc.host].Fail(tc.kind, "registry unreachable")
			inst := h.server("h1", lifecycle.Active)
			m := h.begin(inst, nil, "req-migrate")
			h.idle()
			got := h.migration(m.ID)
			if got.Status != lifecycle.MigrationError || got.Step != string(migrate.StepDone) || !got.Rollback || got.ErrorMessage != tc.want {
				t.Fatalf("migration = %+v", got)
			}
			cur := loadInst(t, st, inst.ID)
			if cur.Host != "h1" || status(cur) != "ACTIVE" || cur.FaultMessage != tc.want || h.portHost(inst.ID) != "h1" {
				t.Errorf("instance = %s on %s fault %q", status(cur), cur.Host, cur.FaultMessage)
			}
			if cl := h.claims(inst.ID); len(cl) != 1 || cl["h1"].ID == 0 {
				t.Errorf("claims = %+v, want only h1's", cl)
			}
			wantSrc := []string{"migration_precopy/precopy", "migration_restore/revert_source"}
			wantDst := []string{"migration_cleanup/revert_target"}
			if tc.kind == protocol.KindMigrationPrepull {
				wantDst = []string{"migration_prepull/prepull", "migration_cleanup/revert_target"}
			}
			if did := h.agents["h1"].Did(); !slices.Equal(did, wantSrc) {
				t.Errorf("source did %v, want %v", did, wantSrc)
			}
			if did := h.agents["h2"].Did(); !slices.Equal(did, wantDst) {
				t.Errorf("target did %v, want %v", did, wantDst)
			}
			if s := h.agents["h2"].Seen(); s[len(s)-1].Work.PreRef == "" {
				t.Errorf("target cleanup without the pre-copy's ref: %+v", s[len(s)-1].Work)
			}
			if del := h.reg.Deleted(); len(del) != 2 || del[1] != got.SnapshotRef+"-pre@" {
				t.Errorf("registry deletions = %v", del)
			}
		})
	}
}

// TestPrecopyResumesAndTimesOut: a conductor that dies during the
// pre-pull (its message lost with its bus) sends it again at start-up
// and the migration completes; a pre-copy no agent answers is rolled back
// at its deadline, and its late work is refused.
func TestPrecopyResumesAndTimesOut(t *testing.T) {
	t.Run("resume", func(t *testing.T) {
		st := openSQLite(t)
		h := newPrecopyHarness(t, st, []string{"h1", "h2"}, "h1")
		inst := h.server("h1", lifecycle.Active)
		m := h.begin(inst, nil, "req-migrate")
		h.idle()
		if got := h.migration(m.ID); got.Step != string(migrate.StepPrepull) || len(h.b.Pending(bus.ComputeQueue("h2"))) != 1 {
			t.Fatalf("before the restart: step %s", got.Step)
		}
		h.b.Close()
		h.b = bus.NewMem(bus.MemLogger(quietLog()))
		t.Cleanup(func() { h.b.Close() })
		h.startConductor(h.b)
		h.startAgent("h1")
		h.startAgent("h2")
		h.eng.Resume(h.ctx)
		h.idle()
		if got := h.migration(m.ID); got.Step != string(migrate.StepFinished) {
			t.Fatalf("after the restart: step %s", got.Step)
		}
		if did := h.agents["h1"].Did(); !slices.Equal(did, []string{"migration_precopy/precopy", "migration_export/exporting"}) {
			t.Errorf("source did %v", did)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		st := openSQLite(t)
		h := newPrecopyHarness(t, st, []string{"h1", "h2"}, "h2")
		inst := h.server("h1", lifecycle.Active)
		m := h.begin(inst, nil, "req-migrate")
		h.idle()
		if got := h.migration(m.ID); got.Step != string(migrate.StepPrecopy) {
			t.Fatalf("step %s, want precopy (waiting in h1's queue)", got.Step)
		}
		h.clock.Add(stepTimeout + time.Second)
		h.eng.Periodic(h.ctx)
		h.idle()
		if got := h.migration(m.ID); got.Step != string(migrate.StepRevertSource) || !got.Rollback ||
			got.ErrorMessage != "Migration step precopy on host h1 timed out after 10m0s." {
			t.Fatalf("migration = %+v", got)
		}
		a := h.startAgent("h1")
		h.idle()
		proceed := map[string]bool{}
		for _, s := range a.Seen() {
			proceed[s.Kind] = s.Proceed
		}
		if proceed[protocol.KindMigrationPrecopy] || !proceed[protocol.KindMigrationRestore] {
			t.Errorf("h1 proceeded with %v; want the pre-copy refused and the restore done", proceed)
		}
		got := h.migration(m.ID)
		if got.Step != string(migrate.StepDone) || got.Status != lifecycle.MigrationError {
			t.Errorf("migration = %s / %s", got.Status, got.Step)
		}
		if cur := loadInst(t, st, inst.ID); cur.Host != "h1" || status(cur) != "ACTIVE" {
			t.Errorf("instance = %s on %s", status(cur), cur.Host)
		}
	})
}

// kindsOf lists the kinds of msgs, for failure messages.
func kindsOf(msgs []bus.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Kind)
	}
	return out
}

// instances_on_host names, besides the servers placed on a host, the
// ones whose cold migration still has work there (source or target), so
// the agent leaves their disks' copies alone; a finished one is not.
func TestInstancesOnHostListsMigrationsThroughIt(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	for _, m := range []store.Migration{
		{UUID: "m1", InstanceID: "i-out", SourceCompute: "h1", DestCompute: "h2", Step: "importing", Status: "migrating"},
		{UUID: "m2", InstanceID: "i-in", SourceCompute: "h2", DestCompute: "h1", Step: "finished", Status: "finished"},
		{UUID: "m3", InstanceID: "i-cleanup", SourceCompute: "h1", DestCompute: "h3", Step: "delete_tag", Status: "confirmed"},
		{UUID: "m4", InstanceID: "i-done", SourceCompute: "h1", DestCompute: "h2", Step: "done", Status: "confirmed"},
		{UUID: "m5", InstanceID: "i-other", SourceCompute: "h2", DestCompute: "h3", Step: "importing", Status: "migrating"},
	} {
		if err := st.DB.Create(&m).Error; err != nil {
			t.Fatal(err)
		}
	}
	reply, err := c.instancesOnHost(context.Background(), "h1")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"i-cleanup", "i-in", "i-out"}; !slices.Equal(reply.Migrating, want) {
		t.Errorf("migrating through h1 = %v, want %v", reply.Migrating, want)
	}
	if reply, err := c.instancesOnHost(context.Background(), "h9"); err != nil || reply.Migrating == nil || len(reply.Migrating) != 0 {
		t.Errorf("migrating through h9 = %#v, %v; want an empty list", reply.Migrating, err)
	}
}
