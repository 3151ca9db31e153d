package conductor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// A volume attach or detach whose work was lost (its host died, the agent
// was killed and its report never came) is given back by the periodic
// sweep once it made no progress for its deadline, and not before: an
// attach's volume is available again without its attachment (10 minutes
// for a mount; an hour while a local volume's data moves to the server's
// host or, for an offloaded server, to the registry), a detach's in-use
// and attached again; each with an error message and a failed
// instance action event. A build's volumes and a deleted server's are
// left to their own sweeps. A late report of the lost work changes
// nothing but deleting the copy a late import made.
func TestSweepLostVolumeWork(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		b := bus.NewMem()
		defer b.Close()
		c := newTestConductor(st, b, 3)
		addHost(t, st, "h1")
		active := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.NoTask))
		building := addInstance(t, st, onHost("h1"))
		offloaded := addInstance(t, st, state(lifecycle.ShelvedOffloaded, lifecycle.NoTask))
		type work struct {
			vol, inst, volHost, attHost string
			status                      store.VolumeStatus
			att                         string
			age                         time.Duration
		}
		cases := []work{
			{"v-mount-old", active.ID, "h1", "h1", store.VolumeAttaching, store.AttachmentAttaching, 11 * time.Minute},
			{"v-mount-young", active.ID, "h1", "h1", store.VolumeAttaching, store.AttachmentAttaching, 9 * time.Minute},
			{"v-move-young", active.ID, "h2", "h1", store.VolumeAttaching, store.AttachmentAttaching, 30 * time.Minute},
			{"v-move-old", active.ID, "h2", "h1", store.VolumeAttaching, store.AttachmentAttaching, 61 * time.Minute},
			{"v-park-old", offloaded.ID, "h2", "", store.VolumeAttaching, store.AttachmentAttaching, 61 * time.Minute},
			{"v-detach-old", active.ID, "h1", "h1", store.VolumeDetaching, store.AttachmentDetaching, 11 * time.Minute},
			{"v-build-old", building.ID, "h1", "h1", store.VolumeAttaching, store.AttachmentAttaching, 11 * time.Minute},
		}
		for i, w := range cases {
			addVolume(t, st, w.vol, w.volHost, w.status)
			if err := st.DB.Create(&store.VolumeAttachment{ID: "a-" + w.vol, VolumeID: w.vol, InstanceID: w.inst, Host: w.attHost,
				Device: "/dev/vd" + string(rune('b'+i)), MountPath: "/mnt/" + w.vol, Status: w.att, CreatedAt: testNow.Add(-w.age)}).Error; err != nil {
				t.Fatal(err)
			}
			if err := st.DB.Model(&store.Volume{}).Where("id = ?", w.vol).UpdateColumn("updated_at", testNow.Add(-w.age)).Error; err != nil {
				t.Fatal(err)
			}
		}

		c.periodic(context.Background())

		row := func(id string) (*store.Volume, *store.VolumeAttachment) {
			t.Helper()
			v, err := store.GetVolume(st.DB, id)
			if err != nil {
				t.Fatal(err)
			}
			a, err := volumeAttachment(st.DB, id)
			if err != nil {
				t.Fatal(err)
			}
			return v, a
		}
		for _, id := range []string{"v-mount-old", "v-move-old", "v-park-old"} {
			v, a := row(id)
			if v.Status != store.VolumeAvailable || a != nil || !strings.Contains(v.ErrorMessage, "no answer") {
				t.Errorf("%s after the sweep: %s %q, attachment %+v; want available without it", id, v.Status, v.ErrorMessage, a)
			}
			if v.Host != "h1" && id == "v-mount-old" || v.Host != "h2" && id != "v-mount-old" {
				t.Errorf("%s given back on %q: its data did not move", id, v.Host)
			}
		}
		if v, a := row("v-detach-old"); v.Status != store.VolumeInUse || a == nil || a.Status != store.AttachmentAttached || v.ErrorMessage == "" {
			t.Errorf("stuck detach after the sweep: %s %q %+v; want in-use, attached", v.Status, v.ErrorMessage, a)
		}
		for _, id := range []string{"v-mount-young", "v-move-young", "v-build-old"} {
			if v, a := row(id); v.Status != store.VolumeAttaching || a == nil || a.Status != store.AttachmentAttaching {
				t.Errorf("%s swept: %s %+v", id, v.Status, a)
			}
		}
		// Instance actions: one failed attach_volume per attach given
		// back (two of the active server's), one detach_volume.
		var acts []store.InstanceAction
		if err := st.DB.Preload("Events").Where("instance_id IN ?", []string{active.ID, offloaded.ID, building.ID}).
			Order("id").Find(&acts).Error; err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, a := range acts {
			count[a.InstanceID+" "+a.Action]++
			if a.Message == nil || *a.Message != "Error" || len(a.Events) != 1 || a.Events[0].Result != "Error" ||
				a.Events[0].Event != "conductor_volume_timeout" || !strings.Contains(a.Events[0].Details, "no answer") {
				t.Errorf("action %s of %s: message %v events %+v", a.Action, a.InstanceID, a.Message, a.Events)
			}
		}
		if count[active.ID+" attach_volume"] != 2 || count[active.ID+" detach_volume"] != 1 || count[offloaded.ID+" attach_volume"] != 1 || len(acts) != 4 {
			t.Errorf("actions recorded: %v", count)
		}

		// Late reports: the mount's success changes nothing; the move's
		// import, refused past its deadline, has its copy deleted.
		mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeAttach, VolumeID: "v-mount-old",
			AttachmentID: "a-v-mount-old", InstanceID: active.ID, Host: "h1", OK: true})
		if v, a := row("v-mount-old"); v.Status != store.VolumeAvailable || a != nil {
			t.Errorf("late attach report: %s %+v", v.Status, a)
		}
		mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeImport, VolumeID: "v-move-old",
			Host: "h1", Error: "volume work volume_import arrived after its deadline", Ref: "127.0.0.1:5050/capsule/volumes/v-move-old:r"})
		c.outbox.Pass(context.Background())
		var drops []string
		for _, m := range b.Sent(bus.ComputeQueue("h1")) {
			var d protocol.VolumeDelete
			if m.Kind == protocol.KindVolumeDelete && m.Decode(&d) == nil {
				drops = append(drops, d.Volume.ID)
			}
		}
		if len(drops) != 1 || drops[0] != "v-move-old" {
			t.Errorf("copy deletions sent to h1: %v", drops)
		}
		if v, _ := row("v-move-old"); v.Status != store.VolumeAvailable || v.Host != "h2" {
			t.Errorf("after the late import report: %s on %q", v.Status, v.Host)
		}
		// A second pass finds nothing more to do.
		c.periodic(context.Background())
		var n int64
		st.DB.Model(&store.InstanceAction{}).Where("instance_id IN ?", []string{active.ID, offloaded.ID, building.ID}).Count(&n)
		if n != 4 {
			t.Errorf("%d actions after a second pass, want 4", n)
		}
	})
}

// The sweep keeps to the configured deadlines (volume.attach_timeout,
// volume.move_timeout), and the messages the conductor casts carry them.
func TestSweepVolumeWorkConfiguredTimeouts(t *testing.T) {
	st := openSQLite(t)
	b := bus.NewMem()
	defer b.Close()
	c := newTestConductor(st, b, 3)
	c.SetVolumeTimeouts(instance.VolumeTimeouts{Attach: time.Minute, Move: 3 * time.Minute})
	addHost(t, st, "h1")
	inst := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.NoTask))
	for _, w := range []struct {
		vol, volHost string
		age          time.Duration
	}{{"v-mount", "h1", 2 * time.Minute}, {"v-move", "h2", 2 * time.Minute}} {
		addVolume(t, st, w.vol, w.volHost, store.VolumeAttaching)
		if err := st.DB.Create(&store.VolumeAttachment{ID: "a-" + w.vol, VolumeID: w.vol, InstanceID: inst.ID, Host: "h1",
			MountPath: "/mnt/" + w.vol, Status: store.AttachmentAttaching}).Error; err != nil {
			t.Fatal(err)
		}
		st.DB.Model(&store.Volume{}).Where("id = ?", w.vol).UpdateColumn("updated_at", testNow.Add(-w.age))
	}
	c.periodic(context.Background())
	if got := volumeStatus(t, st, "v-mount"); got != store.VolumeAvailable {
		t.Errorf("mount past its 1 minute: %s", got)
	}
	if got := volumeStatus(t, st, "v-move"); got != store.VolumeAttaching {
		t.Errorf("move within its 3 minutes: %s", got)
	}
	// The move's export done: the import it casts carries the move's deadline.
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeExport, VolumeID: "v-move", Host: "h2",
		OK: true, Ref: "127.0.0.1:5050/capsule/volumes/v-move:r"})
	c.outbox.Pass(context.Background())
	var imp protocol.VolumeTransfer
	for _, m := range b.Sent(bus.ComputeQueue("h1")) {
		if m.Kind == protocol.KindVolumeImport {
			_ = m.Decode(&imp)
		}
	}
	if want := testNow.Add(3 * time.Minute); !imp.Deadline.Equal(want) {
		t.Errorf("import deadline %s, want %s", imp.Deadline, want)
	}
}
