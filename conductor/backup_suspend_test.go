package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/registry/registrytest"
	"github.com/capsule-cloud/capsule/store"
)

// TestSuspendResumeReports: the driver only knows "paused", the
// conductor records Nova's suspended (power 7) for a suspend, and a
// failed resume leaves the instance suspended, still shown as 7.
func TestSuspendResumeReports(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	addHost(t, st, "h1")
	cases := []struct {
		name       string
		action     lifecycle.Action
		from       lifecycle.VMState
		ok         bool
		seen       lifecycle.PowerState // what the agent reports (the driver's view)
		wantVM     lifecycle.VMState
		wantPower  lifecycle.PowerState
		startPower lifecycle.PowerState
	}{
		{"suspend", lifecycle.ActSuspend, lifecycle.Active, true, lifecycle.PausedPS, lifecycle.Suspended, lifecycle.SuspendedPS, lifecycle.Running},
		{"suspend failed", lifecycle.ActSuspend, lifecycle.Active, false, lifecycle.Running, lifecycle.Active, lifecycle.Running, lifecycle.Running},
		{"resume", lifecycle.ActResume, lifecycle.Suspended, true, lifecycle.Running, lifecycle.Active, lifecycle.Running, lifecycle.SuspendedPS},
		{"resume failed, still frozen", lifecycle.ActResume, lifecycle.Suspended, false, lifecycle.PausedPS, lifecycle.Suspended, lifecycle.SuspendedPS, lifecycle.SuspendedPS},
		{"hard reboot of a suspended one", lifecycle.ActRebootHard, lifecycle.Suspended, true, lifecycle.Running, lifecycle.Active, lifecycle.Running, lifecycle.SuspendedPS},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inst := addInstance(t, st, onHost("h1"), state(tc.from, lifecycle.TaskOf(tc.action)), power(tc.startPower))
			addAction(t, st, inst.ID, string(tc.action), "req-1")
			r := report(inst, "h1", tc.action, "req-1", tc.ok)
			r.PowerState = int(tc.seen)
			mustSend(t, c, protocol.KindInstanceReport, r)
			got := loadInst(t, st, inst.ID)
			if got.VMState != tc.wantVM || got.TaskState != "" || got.PowerState != int(tc.wantPower) {
				t.Errorf("%s/%q/%d, want %s/none/%d", got.VMState, got.TaskState, got.PowerState, tc.wantVM, tc.wantPower)
			}
		})
	}
	// A suspend report for an instance not suspending is stale.
	inst := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.Pausing), power(lifecycle.Running))
	before := loadInst(t, st, inst.ID)
	mustSend(t, c, protocol.KindInstanceReport, report(inst, "h1", lifecycle.ActSuspend, "req-s", true))
	sameInstance(t, loadInst(t, st, inst.ID), before)
}

// TestPowerSyncSuspended: a suspended server the driver sees paused
// (frozen) stays SUSPENDED with power 7, never SHUTOFF; one whose
// container stopped or vanished lost its memory and becomes SHUTOFF.
func TestPowerSyncSuspended(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	addHost(t, st, "h1")
	cases := []struct {
		seen      lifecycle.PowerState
		vm        lifecycle.VMState
		power     lifecycle.PowerState
		inst      store.Instance
		taskState lifecycle.TaskState
	}{
		{seen: lifecycle.PausedPS, vm: lifecycle.Suspended, power: lifecycle.SuspendedPS},
		{seen: lifecycle.Shutdown, vm: lifecycle.Stopped, power: lifecycle.Shutdown},
		{seen: lifecycle.NoState, vm: lifecycle.Stopped, power: lifecycle.NoState},
		{seen: lifecycle.Running, vm: lifecycle.Suspended, power: lifecycle.Running},
	}
	ps := protocol.PowerSync{Host: "h1", States: map[string]int{}}
	for i := range cases {
		// Recorded as "paused" by an older conductor: fixed too.
		cases[i].inst = addInstance(t, st, onHost("h1"), state(lifecycle.Suspended, lifecycle.NoTask), power(lifecycle.PausedPS))
		ps.States[cases[i].inst.ID] = int(cases[i].seen)
	}
	// A resume in flight is left to its own report.
	busy := addInstance(t, st, onHost("h1"), state(lifecycle.Suspended, lifecycle.Resuming), power(lifecycle.SuspendedPS))
	ps.States[busy.ID] = int(lifecycle.Running)
	before := loadInst(t, st, busy.ID)
	mustSend(t, c, protocol.KindPowerSync, ps)
	for _, tc := range cases {
		got := loadInst(t, st, tc.inst.ID)
		if got.VMState != tc.vm || got.PowerState != int(tc.power) || got.TaskState != "" {
			t.Errorf("seen %d: %s/%q/%d, want %s/none/%d", tc.seen, got.VMState, got.TaskState, got.PowerState, tc.vm, tc.power)
		}
	}
	sameInstance(t, loadInst(t, st, busy.ID), before)
}

// fakeTags records the registry deletes the conductor asks for.
type fakeTags struct {
	mu   sync.Mutex
	refs []string
	err  error
}

func (f *fakeTags) ReleaseImage(_ context.Context, ref string, _ []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refs = append(f.refs, ref)
	return f.err
}

func (f *fakeTags) deleted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.refs)
}

// addImage stores an image with the given status and properties, created
// at at, and returns its id.
func addImage(t *testing.T, st *store.Store, status string, at time.Time, props map[string]string, protected bool) string {
	t.Helper()
	b, _ := json.Marshal(props)
	id := uuid.NewString()
	img := store.Image{ID: id, Name: "img-" + id[:8], Owner: "p1", Visibility: "private", Status: status,
		ContainerFormat: "docker", DiskFormat: "raw", RegistryRef: "127.0.0.1:5050/capsule/snapshots:" + id,
		Protected: protected, Properties: string(b), CreatedAt: at, UpdatedAt: at}
	if err := st.DB.Create(&img).Error; err != nil {
		t.Fatalf("add image: %v", err)
	}
	return id
}

func backupProps(instanceID, typ string) map[string]string {
	return map[string]string{"image_type": "backup", "backup_type": typ, "instance_uuid": instanceID}
}

func imageIDs(t *testing.T, st *store.Store) []string {
	t.Helper()
	var ids []string
	if err := st.DB.Model(&store.Image{}).Order("id").Pluck("id", &ids).Error; err != nil {
		t.Fatal(err)
	}
	return ids
}

// backupReport is the agent's report of the backup image id of inst.
func backupReport(inst store.Instance, image string, ok bool, rotation int) protocol.SnapshotReport {
	r := protocol.SnapshotReport{RequestID: "req-b", InstanceID: inst.ID, ImageID: image, Host: "h1",
		Ref: "127.0.0.1:5050/capsule/snapshots:" + image, OK: ok, Digest: "sha256:abc", Size: 10,
		Backup: &protocol.BackupRotation{Type: "daily", Rotation: rotation}, Event: "compute_snapshot_instance",
		Started: testNow.Add(-time.Second), Finished: testNow}
	if !ok {
		r.Error = "push failed"
	}
	return r
}

// TestBackupRotation: once a backup is active, the instance's daily
// backups beyond the rotation go, oldest first, rows and registry tags;
// other types, other instances, snapshots, backups still saving and
// protected ones stay. Rotation 0 removes the new backup too (Nova).
func TestBackupRotation(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		tags := &fakeTags{}
		c := newTestConductor(st, bus.NewMem(), 3)
		c.SetRegistry(tags)
		inst := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.ImageBackup), power(lifecycle.Running))
		other := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.NoTask), power(lifecycle.Running))
		at := func(m int) time.Time { return testNow.Add(time.Duration(m-60) * time.Minute) }
		oldest := addImage(t, st, "active", at(1), backupProps(inst.ID, "daily"), false)
		older := addImage(t, st, "active", at(2), backupProps(inst.ID, "daily"), false)
		old := addImage(t, st, "active", at(3), backupProps(inst.ID, "daily"), false)
		keep := []string{
			addImage(t, st, "active", at(0), backupProps(inst.ID, "weekly"), false),
			addImage(t, st, "active", at(0), backupProps(other.ID, "daily"), false),
			addImage(t, st, "active", at(0), map[string]string{"image_type": "snapshot", "instance_uuid": inst.ID}, false),
			addImage(t, st, "saving", at(4), backupProps(inst.ID, "daily"), false),
			addImage(t, st, "active", at(0), backupProps(inst.ID, "daily"), true), // protected, the oldest
		}
		newest := addImage(t, st, "queued", at(5), backupProps(inst.ID, "daily"), false)

		// A failed backup rotates nothing.
		failed := addImage(t, st, "queued", at(6), backupProps(inst.ID, "daily"), false)
		mustSend(t, c, protocol.KindSnapshotReport, backupReport(inst, failed, false, 0))
		if n := len(imageIDs(t, st)); n != 9 || len(tags.deleted()) != 0 {
			t.Fatalf("after a failed backup: %d images, tags deleted %v", n, tags.deleted())
		}
		if got := loadInst(t, st, inst.ID); got.FaultMessage != "Backup of instance "+inst.ID+" failed: the compute host could not make the image." ||
			got.FaultDetails != "push failed" || got.VMState != lifecycle.Active {
			t.Errorf("after a failed backup: %s, fault %q %q", got.VMState, got.FaultMessage, got.FaultDetails)
		}
		if err := st.DB.Model(&store.Instance{}).Where("id = ?", inst.ID).Update("task_state", string(lifecycle.ImageBackup)).Error; err != nil {
			t.Fatal(err)
		}

		mustSend(t, c, protocol.KindSnapshotReport, backupReport(inst, newest, true, 2))
		want := append(slices.Clone(keep), newest, old)
		slices.Sort(want)
		if got := imageIDs(t, st); !slices.Equal(got, want) {
			t.Errorf("images after rotation 2 = %v, want %v", got, want)
		}
		wantTags := []string{"127.0.0.1:5050/capsule/snapshots:" + older, "127.0.0.1:5050/capsule/snapshots:" + oldest}
		if got := tags.deleted(); !slices.Equal(got, wantTags) {
			t.Errorf("tags deleted = %v, want %v (newest first)", got, wantTags)
		}
		if got := loadInst(t, st, inst.ID); got.TaskState != "" || got.VMState != lifecycle.Active {
			t.Errorf("instance after the backup: %s/%q", got.VMState, got.TaskState)
		}
		// A duplicate report removes nothing more.
		mustSend(t, c, protocol.KindSnapshotReport, backupReport(inst, newest, true, 2))
		if got := imageIDs(t, st); !slices.Equal(got, want) || len(tags.deleted()) != 2 {
			t.Errorf("duplicate report changed images %v or tags %v", got, tags.deleted())
		}

		// Rotation 0: every daily backup goes, the new one included; a
		// registry failure is logged, the rows are gone anyway.
		tags.err = errors.New("registry down")
		if err := st.DB.Model(&store.Instance{}).Where("id = ?", inst.ID).Update("task_state", string(lifecycle.ImageBackup)).Error; err != nil {
			t.Fatal(err)
		}
		last := addImage(t, st, "queued", at(7), backupProps(inst.ID, "daily"), false)
		mustSend(t, c, protocol.KindSnapshotReport, backupReport(inst, last, true, 0))
		want = slices.Clone(keep)
		slices.Sort(want)
		if got := imageIDs(t, st); !slices.Equal(got, want) {
			t.Errorf("images after rotation 0 = %v, want %v", got, want)
		}
		if got := tags.deleted(); len(got) != 5 || got[2] != "127.0.0.1:5050/capsule/snapshots:"+last {
			t.Errorf("tags deleted = %v, want the new backup's, then newest, old", got)
		}
	})
}

// TestBackupRotationRealRegistry: the rotated-out backup's tag is gone
// from a real registry, the kept one's is still there.
func TestBackupRotationRealRegistry(t *testing.T) {
	addr := testenv.Registry(t)
	ctx := context.Background()
	st := openSQLite(t)
	reg := &registry.Client{Address: addr}
	c := newTestConductor(st, bus.NewMem(), 3)
	c.SetRegistry(reg)
	inst := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.ImageBackup), power(lifecycle.Running))
	const repo = "capsule/snapshots"
	old := addImage(t, st, "active", testNow.Add(-time.Hour), backupProps(inst.ID, "daily"), false)
	newest := addImage(t, st, "queued", testNow.Add(-time.Minute), backupProps(inst.ID, "daily"), false)
	for _, id := range []string{old, newest} {
		dg := registrytest.PushTiny(t, reg, repo, id)
		t.Cleanup(func() { _ = reg.DeleteManifest(context.Background(), repo, dg) })
		ref := addr + "/" + repo + ":" + id
		if err := st.DB.Model(&store.Image{}).Where("id = ?", id).Update("registry_ref", ref).Error; err != nil {
			t.Fatal(err)
		}
	}
	r := backupReport(inst, newest, true, 1)
	r.Ref = addr + "/" + repo + ":" + newest
	mustSend(t, c, protocol.KindSnapshotReport, r)
	if got := imageIDs(t, st); !slices.Equal(got, []string{newest}) {
		t.Errorf("images = %v, want only %s", got, newest)
	}
	if _, err := reg.Resolve(ctx, repo, old); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("rotated-out backup's tag: %v, want ErrNotFound", err)
	}
	if _, err := reg.Resolve(ctx, repo, newest); err != nil {
		t.Errorf("kept backup's tag: %v", err)
	}
}

// TestBackupRotationOwnProjectOnly: images of another project that carry
// the properties of backups of the server (any project can set them)
// neither get deleted by its rotation nor push its own backups out; the
// rotation counts and deletes only the backups of the project that made
// the new backup.
func TestBackupRotationOwnProjectOnly(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		tags := &fakeTags{}
		c := newTestConductor(st, bus.NewMem(), 3)
		c.SetRegistry(tags)
		inst := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.ImageBackup), power(lifecycle.Running))
		at := func(m int) time.Time { return testNow.Add(time.Duration(m-60) * time.Minute) }
		own := addImage(t, st, "active", at(1), backupProps(inst.ID, "daily"), false)
		// Another project's look-alikes: one older (would be rotated
		// out), two newer (would fill the rotation and push own out).
		var foreign []string
		for _, m := range []int{0, 3, 4} {
			id := addImage(t, st, "active", at(m), backupProps(inst.ID, "daily"), false)
			if err := st.DB.Model(&store.Image{}).Where("id = ?", id).Update("owner", "p-other").Error; err != nil {
				t.Fatal(err)
			}
			foreign = append(foreign, id)
		}
		newest := addImage(t, st, "queued", at(5), backupProps(inst.ID, "daily"), false)

		mustSend(t, c, protocol.KindSnapshotReport, backupReport(inst, newest, true, 2))
		want := append(slices.Clone(foreign), own, newest)
		slices.Sort(want)
		if got := imageIDs(t, st); !slices.Equal(got, want) {
			t.Errorf("images after rotation 2 = %v, want %v (own backup kept, foreign untouched)", got, want)
		}
		if got := tags.deleted(); len(got) != 0 {
			t.Errorf("tags deleted = %v, want none", got)
		}

		// Rotation 1: the own older backup goes, the foreign ones stay.
		if err := st.DB.Model(&store.Instance{}).Where("id = ?", inst.ID).Update("task_state", string(lifecycle.ImageBackup)).Error; err != nil {
			t.Fatal(err)
		}
		last := addImage(t, st, "queued", at(6), backupProps(inst.ID, "daily"), false)
		mustSend(t, c, protocol.KindSnapshotReport, backupReport(inst, last, true, 1))
		want = append(slices.Clone(foreign), last)
		slices.Sort(want)
		if got := imageIDs(t, st); !slices.Equal(got, want) {
			t.Errorf("images after rotation 1 = %v, want %v", got, want)
		}
		wantTags := []string{"127.0.0.1:5050/capsule/snapshots:" + newest, "127.0.0.1:5050/capsule/snapshots:" + own}
		if got := tags.deleted(); !slices.Equal(got, wantTags) {
			t.Errorf("tags deleted = %v, want %v", got, wantTags)
		}
	})
}
