package instance

import (
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Placing a building server gives the volumes its build makes the
// server's host, shared ones too: the host makes them, and a volume with
// no host is one its delete only drops the row of (a shared image file
// would leak on the export).
func TestPlaceGivesNewVolumesTheHost(t *testing.T) {
	st := openSQLite(t)
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	newInstance(t, st, "i1", func(i *store.Instance) { i.VMState, i.TaskState = lifecycle.Building, lifecycle.Scheduling })
	for _, b := range []string{protocol.BackendLocal, protocol.BackendShared} {
		if err := st.DB.Create(&store.Volume{ID: "v-" + b, ProjectID: "p1", SizeGB: 1, Status: store.VolumeCreating, Backend: b}).Error; err != nil {
			t.Fatal(err)
		}
		if err := st.DB.Create(&store.VolumeAttachment{ID: "a-" + b, VolumeID: "v-" + b, InstanceID: "i1", MountPath: "/mnt/" + b,
			Status: store.AttachmentAttaching}).Error; err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := Place(st.DB, "i1", "h1", "nova", at); err != nil || !ok {
		t.Fatalf("Place = %v, %v", ok, err)
	}
	for _, b := range []string{protocol.BackendLocal, protocol.BackendShared} {
		v, err := store.GetVolume(st.DB, "v-"+b)
		if err != nil || v.Host != "h1" {
			t.Errorf("%s volume after the placement: host %q (%v), want h1", b, v.Host, err)
		}
	}
}
