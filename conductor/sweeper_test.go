package conductor

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/store"
)

func updatedAt(at time.Time) instOpt { return func(i *store.Instance) { i.UpdatedAt = at } }

// TestSweeperEndsTasksWhoseWorkerDied: every task that got no answer
// within its deadline ends as its host's failure would end it; a task
// within its deadline, or whose message still waits in the outbox, is
// left alone.
func TestSweeperEndsTasksWhoseWorkerDied(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		c := New(st, bus.NewMem(), config.Conductor{TaskTimeout: 5 * time.Minute, ImageTaskTimeout: 30 * time.Minute}, 3, quietLog())
		c.now = func() time.Time { return testNow }
		addHost(t, st, "h1")
		stale := updatedAt(testNow.Add(-6 * time.Minute))
		active := func(task lifecycle.TaskState) instOpt { return state(lifecycle.Active, task) }
		reboot := addInstance(t, st, onHost("h1"), active(lifecycle.Rebooting), power(lifecycle.Running), stale)
		stop := addInstance(t, st, onHost("h1"), active(lifecycle.PoweringOff), power(lifecycle.Running), stale)
		del := addInstance(t, st, onHost("h1"), active(lifecycle.Deleting), stale)
		// A live resize from 1 to 2 vCPUs: the new flavor and claim are
		// recorded, the old kept.
		resize := addInstance(t, st, onHost("h1"), active(lifecycle.ResizePrep), stale, func(i *store.Instance) {
			i.VCPUs, i.FlavorID = 2, "f2"
			i.OldFlavorID, i.OldFlavorName, i.OldVCPUs, i.OldMemoryMB, i.OldRootGB = "f1", "m1.tiny", 1, 512, 1
			i.ResizeFromState = lifecycle.Active
		})
		if err := st.ClaimOnHost(context.Background(), "h1", resize.ID, store.Resources{VCPUs: 2, MemoryMB: 512, DiskGB: 1}, nil); err != nil {
			t.Fatal(err)
		}
		snap := addInstance(t, st, onHost("h1"), active(lifecycle.ImageSnapshot), updatedAt(testNow.Add(-31*time.Minute)))
		props, _ := json.Marshal(map[string]string{"instance_uuid": snap.ID, "image_type": "snapshot"})
		img := store.Image{ID: "img-snap", Name: "s", Owner: "p1", Status: "saving", Properties: string(props)}
		if err := st.DB.Create(&img).Error; err != nil {
			t.Fatal(err)
		}
		rebuild := addInstance(t, st, onHost("h1"), active(lifecycle.Rebuilding), updatedAt(testNow.Add(-31*time.Minute)))
		// Left alone: within the deadline (a snapshot has the long one),
		// and a stale task whose message the relay still owes the host.
		fresh := addInstance(t, st, onHost("h1"), active(lifecycle.Rebooting), updatedAt(testNow.Add(-4*time.Minute)))
		slowSnap := addInstance(t, st, onHost("h1"), active(lifecycle.ImageSnapshot), stale)
		undelivered := addInstance(t, st, onHost("h1"), active(lifecycle.Rebooting), stale)
		err := st.DB.Transaction(func(tx *gorm.DB) error {
			m, _ := bus.NewMessage("instance_action", map[string]string{"instance_id": undelivered.ID})
			var b outbox.Batch
			return b.Enqueue(tx, bus.ComputeQueue("h1"), undelivered.ID, m)
		})
		if err != nil {
			t.Fatal(err)
		}
		// A message the broker refused since before the deadline (its
		// queue is gone): dropped, the task ended.
		refused := addInstance(t, st, onHost("h1"), active(lifecycle.Rebooting), stale)
		if err := st.DB.Create(&store.OutboxMessage{Queue: bus.ComputeQueue("gone"), MessageID: "m-refused", Kind: "instance_action",
			InstanceID: refused.ID, CreatedAt: testNow.Add(-6 * time.Minute), DueAt: testNow, Attempts: 40}).Error; err != nil {
			t.Fatal(err)
		}
		for _, i := range []store.Instance{reboot, stop, del, resize, snap, rebuild} {
			addAction(t, st, i.ID, "x", "req-"+i.ID)
		}

		c.periodic(context.Background())

		if got := loadInst(t, st, refused.ID); got.TaskState != lifecycle.NoTask {
			t.Errorf("task whose message the broker refused past the deadline: still %q", got.TaskState)
		}
		if pending, _ := store.OutboxPending(st.DB, refused.ID); pending {
			t.Error("the refused message is still in the outbox")
		}
		if pending, _ := store.OutboxPending(st.DB, undelivered.ID); !pending {
			t.Error("a message within the deadline was dropped")
		}
		for _, i := range []store.Instance{reboot, stop} {
			got := loadInst(t, st, i.ID)
			if got.VMState != lifecycle.Active || got.TaskState != lifecycle.NoTask {
				t.Errorf("stuck %s: now %s/%q, want active with no task", i.TaskState, got.VMState, got.TaskState)
			}
			if evs := eventsOf(t, st, i.ID, "req-"+i.ID); len(evs) != 1 || evs[0].Result != "Error" {
				t.Errorf("stuck %s: events %+v, want one failed", i.TaskState, evs)
			}
		}
		for _, i := range []store.Instance{del, rebuild} {
			got := loadInst(t, st, i.ID)
			if got.VMState != lifecycle.Error || got.TaskState != lifecycle.NoTask || got.FaultMessage == "" {
				t.Errorf("stuck %s: now %s/%q fault %q, want ERROR with a fault", i.TaskState, got.VMState, got.TaskState, got.FaultMessage)
			}
		}
		got := loadInst(t, st, resize.ID)
		if got.VMState != lifecycle.Active || got.TaskState != lifecycle.NoTask || got.VCPUs != 1 || got.FlavorID != "f1" || got.FaultMessage == "" {
			t.Errorf("stuck resize: now %s/%q %d vCPUs flavor %s fault %q, want active on the old flavor with a fault",
				got.VMState, got.TaskState, got.VCPUs, got.FlavorID, got.FaultMessage)
		}
		var cl store.Claim
		st.DB.Where("instance_id = ?", resize.ID).First(&cl)
		if cl.VCPUs != 1 {
			t.Errorf("stuck resize: claim of %d vCPUs left, want the old 1", cl.VCPUs)
		}
		if got := loadInst(t, st, snap.ID); got.TaskState != lifecycle.NoTask || got.VMState != lifecycle.Active {
			t.Errorf("stuck snapshot: now %s/%q", got.VMState, got.TaskState)
		}
		var n int64
		st.DB.Model(&store.Image{}).Where("id = ?", img.ID).Count(&n)
		if n != 0 {
			t.Error("the image of a stuck snapshot is left saving")
		}
		for _, i := range []store.Instance{fresh, slowSnap, undelivered} {
			if got := loadInst(t, st, i.ID); got.TaskState != i.TaskState || got.VMState != i.VMState {
				t.Errorf("%s within its deadline or undelivered: now %s/%q", i.TaskState, got.VMState, got.TaskState)
			}
		}
	})
}

// TestSweepersSideBySideEndATaskOnce: two conductors (replicas of the
// role, no leader) read the same stuck reboot; the first ends it, the
// second ends it again from the row it read before, as a redelivered
// failure report would: the report handling is idempotent (the state
// transitions are conditional, the event is keyed by request), so the
// task has one failure event and its state once, with no lock.
func TestSweepersSideBySideEndATaskOnce(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		cfg := config.Conductor{TaskTimeout: 5 * time.Minute}
		first, second := New(st, bus.NewMem(), cfg, 3, quietLog()), New(st, bus.NewMem(), cfg, 3, quietLog())
		first.now = func() time.Time { return testNow }
		second.now = first.now
		addHost(t, st, "h1")
		inst := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.Rebooting), power(lifecycle.Running),
			updatedAt(testNow.Add(-6*time.Minute)))
		addAction(t, st, inst.ID, "reboot", "req-1")
		read := loadInst(t, st, inst.ID) // what both sweeps found

		for _, c := range []*Conductor{first, second} {
			stale := read
			if err := c.expireTask(context.Background(), &stale, 5*time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if got := loadInst(t, st, inst.ID); got.VMState != lifecycle.Active || got.TaskState != lifecycle.NoTask {
			t.Errorf("swept reboot: now %s/%q, want active with no task", got.VMState, got.TaskState)
		}
		if evs := eventsOf(t, st, inst.ID, "req-1"); len(evs) != 1 {
			t.Errorf("swept by two conductors: %d events %+v, want one", len(evs), evs)
		}
	})
}
