package conductor

import (
	"context"
	"slices"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

func addVolume(t *testing.T, st *store.Store, id, host string, status store.VolumeStatus) {
	t.Helper()
	v := store.Volume{ID: id, ProjectID: "p1", SizeGB: 1, Status: status, Backend: protocol.BackendLocal, Host: host, CreatedAt: testNow}
	if err := st.DB.Create(&v).Error; err != nil {
		t.Fatal(err)
	}
}

func volumeStatus(t *testing.T, st *store.Store, id string) store.VolumeStatus {
	t.Helper()
	v, err := store.GetVolume(st.DB, id)
	if err != nil {
		t.Fatal(err)
	}
	return v.Status
}

// Reports move volumes along the state machine once; a report from a host
// that does not hold the volume is refused and changes nothing.
func TestVolumeReports(t *testing.T) {
	st := storetest.SQLite(t)
	b := bus.NewMem()
	defer b.Close()
	c := newTestConductor(st, b, 3)
	addVolume(t, st, "v1", "h1", store.VolumeCreating)
	addVolume(t, st, "v2", "h1", store.VolumeCreating)

	if _, err := send(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeCreate, VolumeID: "v1", Host: "h2", OK: true}); err == nil {
		t.Fatal("a report of another host's volume accepted")
	}
	if got := volumeStatus(t, st, "v1"); got != store.VolumeCreating {
		t.Fatalf("after a foreign report: %s", got)
	}
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeCreate, VolumeID: "v1", Host: "h1", OK: true})
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeCreate, VolumeID: "v2", Host: "h1",
		ErrorMessage: "no space left on the host"})
	if got := volumeStatus(t, st, "v1"); got != store.VolumeAvailable {
		t.Fatalf("v1 %s", got)
	}
	v2, _ := store.GetVolume(st.DB, "v2")
	if v2.Status != store.VolumeError || v2.ErrorMessage != "no space left on the host" {
		t.Fatalf("v2 %+v", v2)
	}
	// a redelivered failure of v1's create changes nothing
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeCreate, VolumeID: "v1", Host: "h1"})
	if got := volumeStatus(t, st, "v1"); got != store.VolumeAvailable {
		t.Fatalf("v1 after a stale report %s", got)
	}

	// attach then a refused (busy) detach, then a detach
	if err := st.DB.Create(&store.VolumeAttachment{ID: "a1", VolumeID: "v1", InstanceID: "i1", Host: "h1", Status: store.AttachmentAttaching}).Error; err != nil {
		t.Fatal(err)
	}
	store.ChangeVolumeStatus(st.DB, "v1", []store.VolumeStatus{store.VolumeAvailable}, store.VolumeAttaching, nil)
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeAttach, VolumeID: "v1", AttachmentID: "a1", Host: "h1", OK: true})
	if got := volumeStatus(t, st, "v1"); got != store.VolumeInUse {
		t.Fatalf("attached %s", got)
	}
	st.DB.Model(&store.VolumeAttachment{}).Where("id = ?", "a1").Update("status", store.AttachmentDetaching)
	store.ChangeVolumeStatus(st.DB, "v1", []store.VolumeStatus{store.VolumeInUse}, store.VolumeDetaching, nil)
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeDetach, VolumeID: "v1", AttachmentID: "a1", Host: "h1",
		ErrorKind: "conflict", ErrorMessage: "target is busy"})
	v1, _ := store.GetVolume(st.DB, "v1")
	if v1.Status != store.VolumeInUse || v1.ErrorMessage != "target is busy" {
		t.Fatalf("busy detach left %+v", v1)
	}
	st.DB.Model(&store.VolumeAttachment{}).Where("id = ?", "a1").Update("status", store.AttachmentDetaching)
	store.ChangeVolumeStatus(st.DB, "v1", []store.VolumeStatus{store.VolumeInUse}, store.VolumeDetaching, nil)
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeDetach, VolumeID: "v1", AttachmentID: "a1", Host: "h1", OK: true})
	var n int64
	st.DB.Model(&store.VolumeAttachment{}).Count(&n)
	if got := volumeStatus(t, st, "v1"); got != store.VolumeAvailable || n != 0 {
		t.Fatalf("detached %s, %d attachments", got, n)
	}

	// delete
	store.ChangeVolumeStatus(st.DB, "v1", []store.VolumeStatus{store.VolumeAvailable}, store.VolumeDeleting, nil)
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeDelete, VolumeID: "v1", Host: "h1", OK: true})
	if _, err := store.GetVolume(st.DB, "v1"); err == nil {
		t.Fatal("v1 still there after its delete")
	}
	reply := mustSend(t, c, protocol.KindVolumesOnHost, protocol.VolumesOnHostRequest{Host: "h1"}).(*protocol.VolumesOnHostReply)
	if len(reply.Volumes) != 1 || reply.Volumes[0].ID != "v2" {
		t.Fatalf("volumes on h1 %+v", reply)
	}
}

// A local volume attached to a server on another host moves there:
// export done -> import cast to the server's host; import done -> the
// volume's host is the server's, the old copy goes, the attach is cast.
func TestVolumeTransferForAttach(t *testing.T) {
	st := storetest.SQLite(t)
	b := bus.NewMem()
	defer b.Close()
	c := newTestConductor(st, b, 3)
	tags := &fakeTags{}
	c.SetRegistry(tags)
	addVolume(t, st, "v1", "h1", store.VolumeAttaching)
	if err := st.DB.Create(&store.VolumeAttachment{ID: "a1", VolumeID: "v1", InstanceID: "i1", Host: "h2", MountPath: "/mnt/v1",
		Status: store.AttachmentAttaching}).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := send(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeExport, VolumeID: "v1", Host: "h2", OK: true, Ref: "r"}); err == nil {
		t.Fatal("an export report from the target accepted")
	}
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeExport, VolumeID: "v1", Host: "h1", OK: true, Ref: "127.0.0.1:5050/capsule/volumes/v1:r"})
	c.outbox.Pass(context.Background())
	var imp protocol.VolumeTransfer
	msgs := b.Sent(bus.ComputeQueue("h2"))
	if len(msgs) != 1 || msgs[0].Kind != protocol.KindVolumeImport || msgs[0].Decode(&imp) != nil || imp.Ref != "127.0.0.1:5050/capsule/volumes/v1:r" || imp.Volume.Host != "h2" {
		t.Fatalf("import %v %+v", msgs, imp)
	}
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeImport, VolumeID: "v1", Host: "h2", OK: true, Ref: imp.Ref})
	c.outbox.Pass(context.Background())
	if d := tags.deleted(); len(d) != 1 || d[0] != imp.Ref {
		t.Fatalf("transfer tags deleted: %v", d)
	}
	v, _ := store.GetVolume(st.DB, "v1")
	if v.Host != "h2" || v.Status != store.VolumeAttaching {
		t.Fatalf("after import %+v", v)
	}
	kinds := func(h string) []string {
		var out []string
		for _, m := range b.Sent(bus.ComputeQueue(h)) {
			out = append(out, m.Kind)
		}
		return out
	}
	if k := kinds("h1"); len(k) != 1 || k[0] != protocol.KindVolumeDelete {
		t.Fatalf("to h1: %v", k)
	}
	if k := kinds("h2"); len(k) != 2 || k[1] != protocol.KindVolumeAttach {
		t.Fatalf("to h2: %v", k)
	}
	// the old host's delete report changes nothing
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeDelete, VolumeID: "v1", Host: "h1", OK: true})
	if v, _ := store.GetVolume(st.DB, "v1"); v == nil || v.Status != store.VolumeAttaching {
		t.Fatalf("after the old copy's delete %+v", v)
	}
}

// Deleting a server detaches its volumes (forced) on its host and, once
// the host unmounted them, deletes the delete_on_termination ones.
func TestServerDeleteReleasesVolumes(t *testing.T) {
	st := storetest.SQLite(t)
	b := bus.NewMem()
	defer b.Close()
	c := newTestConductor(st, b, 3)
	inst := addInstance(t, st, onHost("h1"))
	addVolume(t, st, "keep", "h1", store.VolumeInUse)
	addVolume(t, st, "dot", "h1", store.VolumeInUse)
	for _, a := range []store.VolumeAttachment{
		{ID: "a-keep", VolumeID: "keep", InstanceID: inst.ID, Host: "h1", MountPath: "/mnt/keep", Status: store.AttachmentAttached},
		{ID: "a-dot", VolumeID: "dot", InstanceID: inst.ID, Host: "h1", MountPath: "/mnt/dot", Status: store.AttachmentAttached, DeleteOnTermination: true},
	} {
		if err := st.DB.Create(&a).Error; err != nil {
			t.Fatal(err)
		}
	}
	if err := instance.MarkDeleted(context.Background(), st, inst.ID, testNow); err != nil {
		t.Fatal(err)
	}
	c.outbox.Pass(context.Background())
	var forced int
	for _, m := range b.Sent(bus.ComputeQueue("h1")) {
		var d protocol.VolumeDetach
		if m.Kind == protocol.KindVolumeDetach && m.Decode(&d) == nil && d.Force && d.InstanceID == inst.ID {
			forced++
		}
	}
	if forced != 2 || volumeStatus(t, st, "keep") != store.VolumeDetaching {
		t.Fatalf("forced detaches %d, keep %s", forced, volumeStatus(t, st, "keep"))
	}
	for _, id := range []string{"keep", "dot"} {
		mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeDetach, VolumeID: id, AttachmentID: "a-" + id, Host: "h1", OK: true})
	}
	if got := volumeStatus(t, st, "keep"); got != store.VolumeAvailable {
		t.Fatalf("kept volume %s", got)
	}
	if got := volumeStatus(t, st, "dot"); got != store.VolumeDeleting {
		t.Fatalf("delete_on_termination volume %s", got)
	}
}

// A transfer whose attach is gone (its server deleted mid-move) leaves
// nothing: the copy an import made on the server's host is deleted there
// (the volume stays on its host), also when the volume itself was
// deleted meanwhile; an export nothing will import has its tag deleted.
func TestSupersededVolumeTransferLeavesNoCopy(t *testing.T) {
	st := storetest.SQLite(t)
	b := bus.NewMem()
	defer b.Close()
	c := newTestConductor(st, b, 3)
	tags := &fakeTags{}
	c.SetRegistry(tags)
	addVolume(t, st, "v1", "h1", store.VolumeAvailable) // its attach to a server on h2 was dropped
	drops := func(h string) []string {
		var out []string
		for _, m := range b.Sent(bus.ComputeQueue(h)) {
			var d protocol.VolumeDelete
			if m.Kind == protocol.KindVolumeDelete && m.Decode(&d) == nil {
				out = append(out, d.Volume.ID)
			}
		}
		return out
	}
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeExport, VolumeID: "v1", Host: "h1", OK: true, Ref: "127.0.0.1:5050/capsule/volumes/v1:a"})
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeImport, VolumeID: "v1", Host: "h2", OK: true, Ref: "127.0.0.1:5050/capsule/volumes/v1:b"})
	c.outbox.Pass(context.Background())
	if d := drops("h2"); len(d) != 1 || d[0] != "v1" {
		t.Fatalf("copy deletions sent to h2: %v", d)
	}
	if d := drops("h1"); len(d) != 0 {
		t.Fatalf("the volume's own host was told to delete it: %v", d)
	}
	if v, _ := store.GetVolume(st.DB, "v1"); v.Host != "h1" || v.Status != store.VolumeAvailable {
		t.Fatalf("volume %+v", v)
	}
	if d := tags.deleted(); !slices.Equal(d, []string{"127.0.0.1:5050/capsule/volumes/v1:a", "127.0.0.1:5050/capsule/volumes/v1:b"}) {
		t.Fatalf("tags deleted %v", d)
	}
	// The copy's delete report changes nothing, even while the volume
	// is being deleted on its own host.
	st.DB.Model(&store.Volume{}).Where("id = ?", "v1").Update("status", store.VolumeDeleting)
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeDelete, VolumeID: "v1", Host: "h2", OK: true})
	if v, err := store.GetVolume(st.DB, "v1"); err != nil || v.Status != store.VolumeDeleting {
		t.Fatalf("after the copy's delete report: %+v %v", v, err)
	}
	// Deleted volume: a late import's copy goes too.
	st.DB.Where("id = ?", "v1").Delete(&store.Volume{})
	mustSend(t, c, protocol.KindVolumeReport, protocol.VolumeReport{Kind: protocol.KindVolumeImport, VolumeID: "v1", Host: "h3", OK: true, Ref: "127.0.0.1:5050/capsule/volumes/v1:c"})
	c.outbox.Pass(context.Background())
	if d := drops("h3"); len(d) != 1 || d[0] != "v1" {
		t.Fatalf("copy deletions sent to h3: %v", d)
	}
}
