package volume_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

func TestVolumeReserveUnreserve(t *testing.T) {
	e := newEnv(t)
	id := e.volume("alice", obj{"size": 1})["id"].(string)
	act := "/volumes/" + id + "/action"
	e.must(http.StatusAccepted, "POST", act, "alice", obj{"os-reserve": obj{}})
	if got := e.must(http.StatusOK, "GET", "/volumes/"+id, "alice", nil)["volume"].(obj); got["status"] != "attaching" {
		t.Fatalf("reserved %v", got)
	}
	// reserved: not again, not deleted
	e.fails(http.StatusBadRequest, "badRequest", "POST", act, "alice", obj{"os-reserve": obj{}})
	e.fails(http.StatusBadRequest, "badRequest", "DELETE", "/volumes/"+id, "alice", nil)
	e.must(http.StatusAccepted, "POST", act, "alice", obj{"os-unreserve": obj{}})
	if got := e.must(http.StatusOK, "GET", "/volumes/"+id, "alice", nil)["volume"].(obj); got["status"] != "available" {
		t.Fatalf("unreserved %v", got)
	}
	// unreserve of an available volume changes nothing
	e.must(http.StatusAccepted, "POST", act, "alice", obj{"os-unreserve": obj{}})
	// an attach under way (attaching with its attachment) is not undone
	if _, err := store.ChangeVolumeStatus(e.st.DB, id, []store.VolumeStatus{store.VolumeAvailable}, store.VolumeAttaching, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.st.DB.Create(&store.VolumeAttachment{ID: "att-1", VolumeID: id, InstanceID: "srv-1", Host: "h1", Status: store.AttachmentAttaching}).Error; err != nil {
		t.Fatal(err)
	}
	e.must(http.StatusAccepted, "POST", act, "alice", obj{"os-unreserve": obj{}})
	if got := e.must(http.StatusOK, "GET", "/volumes/"+id, "alice", nil)["volume"].(obj); got["status"] != "attaching" {
		t.Fatalf("unreserve undid an attach: %v", got)
	}
}

func TestVolumeSetBootable(t *testing.T) {
	e := newEnv(t)
	id := e.volume("alice", obj{"size": 1})["id"].(string)
	act := "/volumes/" + id + "/action"
	for _, tc := range []struct {
		val  any
		want string
	}{{true, "true"}, {false, "false"}, {"yes", "true"}, {"False", "false"}} {
		e.must(http.StatusOK, "POST", act, "alice", obj{"os-set_bootable": obj{"bootable": tc.val}})
		if got := e.must(http.StatusOK, "GET", "/volumes/"+id, "alice", nil)["volume"].(obj); got["bootable"] != tc.want {
			t.Fatalf("bootable %v: %v", tc.val, got["bootable"])
		}
	}
	e.fails(http.StatusBadRequest, "badRequest", "POST", act, "alice", obj{"os-set_bootable": obj{"bootable": "maybe"}})
	e.fails(http.StatusBadRequest, "badRequest", "POST", act, "alice", obj{"os-set_bootable": obj{}})
	list := e.must(http.StatusOK, "GET", "/volumes?bootable=false", "alice", nil)["volumes"].([]any)
	if len(list) != 1 {
		t.Fatalf("bootable=false list %v", list)
	}
}

func TestVolumeImageMetadata(t *testing.T) {
	e := newEnv(t)
	id := e.volume("alice", obj{"size": 1})["id"].(string)
	act := "/volumes/" + id + "/action"
	if got := e.must(http.StatusOK, "GET", "/volumes/"+id, "alice", nil)["volume"].(obj); got["volume_image_metadata"] != nil {
		t.Fatalf("a blank volume has image metadata: %v", got)
	}
	out := e.must(http.StatusOK, "POST", act, "alice", obj{"os-set_image_metadata": obj{"metadata": obj{"image_name": "testimage", "os_distro": "debian"}}})
	if m := out["metadata"].(obj); m["image_name"] != "testimage" || m["os_distro"] != "debian" {
		t.Fatalf("set %v", out)
	}
	e.must(http.StatusOK, "POST", act, "alice", obj{"os-set_image_metadata": obj{"metadata": obj{"os_distro": "alpine"}}})
	shown := e.must(http.StatusOK, "POST", act, "alice", obj{"os-show_image_metadata": obj{}})["metadata"].(obj)
	if len(shown) != 2 || shown["os_distro"] != "alpine" {
		t.Fatalf("show %v", shown)
	}
	e.must(http.StatusOK, "POST", act, "alice", obj{"os-unset_image_metadata": obj{"key": "image_name"}})
	e.fails(http.StatusNotFound, "itemNotFound", "POST", act, "alice", obj{"os-unset_image_metadata": obj{"key": "image_name"}})
	e.fails(http.StatusBadRequest, "badRequest", "POST", act, "alice", obj{"os-unset_image_metadata": obj{}})
	e.fails(http.StatusBadRequest, "badRequest", "POST", act, "alice", obj{"os-set_image_metadata": obj{"metadata": "x"}})
	got := e.must(http.StatusOK, "GET", "/volumes/"+id, "alice", nil)["volume"].(obj)
	if m, _ := got["volume_image_metadata"].(obj); len(m) != 1 || m["os_distro"] != "alpine" {
		t.Fatalf("view %v", got)
	}
	// the reader may read it, another project may not
	e.must(http.StatusOK, "POST", act, "reader", obj{"os-show_image_metadata": obj{}})
	e.fails(http.StatusNotFound, "itemNotFound", "POST", act, "bob", obj{"os-show_image_metadata": obj{}})
}

// A whole quota set read back may be written back (clients restore one
// so); the keys Capsule does not enforce keep their one value.
func TestQuotaSetRoundTrip(t *testing.T) {
	e := newEnv(t)
	qs := e.must(http.StatusOK, "GET", "/os-quota-sets/p1", "admin", nil)["quota_set"].(obj)
	qs["volumes"] = 2
	e.must(http.StatusOK, "PUT", "/os-quota-sets/p1", "admin", obj{"quota_set": qs})
	if got := e.must(http.StatusOK, "GET", "/os-quota-sets/p1", "alice", nil)["quota_set"].(obj); got["volumes"] != float64(2) || got["backups"] != float64(0) {
		t.Fatalf("after the round trip %v", got)
	}
	for _, k := range []string{"backups", "backup_gigabytes", "groups"} {
		msg := e.fails(http.StatusBadRequest, "badRequest", "PUT", "/os-quota-sets/p1", "admin", obj{"quota_set": obj{k: 2}})
		if !strings.Contains(msg, k) {
			t.Errorf("%s refused with %q", k, msg)
		}
	}
	e.fails(http.StatusBadRequest, "badRequest", "PUT", "/os-quota-sets/p1", "admin", obj{"quota_set": obj{"volumes_foo": 5}})
	// nothing of a refused set was applied
	e.fails(http.StatusBadRequest, "badRequest", "PUT", "/os-quota-sets/p1", "admin", obj{"quota_set": obj{"volumes": 7, "groups": 1}})
	if got := e.must(http.StatusOK, "GET", "/os-quota-sets/p1", "alice", nil)["quota_set"].(obj); got["volumes"] != float64(2) {
		t.Fatalf("a refused set changed volumes: %v", got)
	}
	e.must(http.StatusOK, "DELETE", "/os-quota-sets/p1", "admin", nil)
	if got := e.must(http.StatusOK, "GET", "/os-quota-sets/p1", "alice", nil)["quota_set"].(obj); got["volumes"] != float64(3) {
		t.Fatalf("after delete %v", got)
	}
}

func TestVolumeServicesAndPools(t *testing.T) {
	e := newEnv(t)
	e.volume("alice", obj{"size": 2})
	for _, path := range []string{"/os-services", "/scheduler-stats/get_pools?detail=true"} {
		e.fails(http.StatusForbidden, "forbidden", "GET", path, "alice", nil)
		e.fails(http.StatusForbidden, "forbidden", "GET", path, "reader", nil)
		if code, _, _ := e.do("GET", path, "garbage", nil); code != http.StatusUnauthorized {
			t.Errorf("%s with a bad token: %d", path, code)
		}
	}
	svcs := e.must(http.StatusOK, "GET", "/os-services", "admin", nil)["services"].([]any)
	if len(svcs) != 1 {
		t.Fatalf("services %v", svcs)
	}
	if s := svcs[0].(obj); s["binary"] != "cinder-volume" || s["host"] != "h1@local" || s["state"] != "up" || s["status"] != "enabled" {
		t.Fatalf("service %v", s)
	}
	if got := e.must(http.StatusOK, "GET", "/os-services?binary=cinder-scheduler", "admin", nil)["services"].([]any); len(got) != 0 {
		t.Fatalf("binary filter %v", got)
	}
	pools := e.must(http.StatusOK, "GET", "/scheduler-stats/get_pools?detail=true", "admin", nil)["pools"].([]any)
	if len(pools) != 1 {
		t.Fatalf("pools %v", pools)
	}
	p := pools[0].(obj)
	if caps := p["capabilities"].(obj); p["name"] != "h1@local#local" || caps["allocated_capacity_gb"] != float64(2) || caps["total_volumes"] != float64(1) {
		t.Fatalf("pool %v", p)
	}
	if p := e.must(http.StatusOK, "GET", "/scheduler-stats/get_pools", "admin", nil)["pools"].([]any)[0].(obj); p["capabilities"] != nil {
		t.Fatalf("pool without detail %v", p)
	}
}

func TestSnapshotAdminActions(t *testing.T) {
	e := newEnv(t)
	vid := e.volume("alice", obj{"size": 1})["id"].(string)
	sid := e.must(http.StatusAccepted, "POST", "/snapshots", "alice", obj{"snapshot": obj{"volume_id": vid}})["snapshot"].(obj)["id"].(string)
	act := "/snapshots/" + sid + "/action"
	status := func() string {
		return e.must(http.StatusOK, "GET", "/snapshots/"+sid, "alice", nil)["snapshot"].(obj)["status"].(string)
	}
	// every action is the admins': a member, the reader, another project get 403; no token 401
	for _, body := range []obj{
		{"os-reset_status": obj{"status": "error"}},
		{"os-force_delete": obj{}},
		{"os-update_snapshot_status": obj{"status": "available"}},
	} {
		for _, tok := range []string{"alice", "reader", "bob"} {
			e.fails(http.StatusForbidden, "forbidden", "POST", act, tok, body)
		}
		if code, _, _ := e.do("POST", act, "garbage", body); code != http.StatusUnauthorized {
			t.Errorf("%v with a bad token: %d", body, code)
		}
	}
	e.fails(http.StatusNotFound, "itemNotFound", "POST", "/snapshots/nope/action", "admin", obj{"os-reset_status": obj{"status": "error"}})
	e.fails(http.StatusBadRequest, "badRequest", "POST", act, "admin", obj{"os-reset_status": obj{"status": "bogus"}})
	e.fails(http.StatusBadRequest, "badRequest", "POST", act, "admin", obj{"os-bogus": obj{}})
	// update_snapshot_status: creating -> available, not back
	e.must(http.StatusAccepted, "POST", act, "admin", obj{"os-update_snapshot_status": obj{"status": "available", "progress": "100%"}})
	if got := status(); got != "available" {
		t.Fatalf("after update %s", got)
	}
	e.fails(http.StatusBadRequest, "badRequest", "POST", act, "admin", obj{"os-update_snapshot_status": obj{"status": "error"}})
	// reset: any status
	e.must(http.StatusAccepted, "POST", act, "admin", obj{"os-reset_status": obj{"status": "creating"}})
	if got := status(); got != "creating" {
		t.Fatalf("after reset %s", got)
	}
	// force delete, even of a creating snapshot: its host deletes it
	e.must(http.StatusAccepted, "POST", act, "admin", obj{"os-force_delete": obj{}})
	if got := status(); got != "deleting" {
		t.Fatalf("after force delete %s", got)
	}
	if n := len(e.sent(protocol.KindSnapshotDelete)); n != 1 {
		t.Fatalf("snapshot delete work: %d", n)
	}
	e.fails(http.StatusBadRequest, "badRequest", "POST", act, "admin", obj{"os-force_delete": obj{}})
}

// per_volume_gigabytes limits one volume's size at create and extend.
func TestPerVolumeGigabytes(t *testing.T) {
	e := newEnv(t)
	if qs := e.must(http.StatusOK, "GET", "/os-quota-sets/p1", "alice", nil)["quota_set"].(obj); qs["per_volume_gigabytes"] != float64(-1) {
		t.Fatalf("default %v", qs)
	}
	e.must(http.StatusOK, "PUT", "/os-quota-sets/p1", "admin", obj{"quota_set": obj{"per_volume_gigabytes": 2}})
	if qs := e.must(http.StatusOK, "GET", "/os-quota-sets/p1?usage=true", "alice", nil)["quota_set"].(obj); qs["per_volume_gigabytes"].(obj)["limit"] != float64(2) {
		t.Fatalf("set %v", qs)
	}
	msg := e.fails(http.StatusRequestEntityTooLarge, "overLimit", "POST", "/volumes", "alice", obj{"volume": obj{"size": 3}})
	if !strings.Contains(msg, "maximum allowed limit 2G") {
		t.Fatalf("refused with %q", msg)
	}
	id := e.volume("alice", obj{"size": 2})["id"].(string)
	e.fails(http.StatusRequestEntityTooLarge, "overLimit", "POST", "/volumes/"+id+"/action", "alice", obj{"os-extend": obj{"new_size": 3}})
	// another project is not limited
	e.volume("bob", obj{"size": 3})
	e.must(http.StatusOK, "PUT", "/os-quota-sets/p1", "admin", obj{"quota_set": obj{"per_volume_gigabytes": -1}})
	e.must(http.StatusAccepted, "POST", "/volumes/"+id+"/action", "alice", obj{"os-extend": obj{"new_size": 3}})
}

// An action body names exactly one known action, on volumes and snapshots
// alike: none, two or an unknown one is a 400.
func TestActionBodyNamesOneAction(t *testing.T) {
	e := newEnv(t)
	id := e.volume("alice", obj{"size": 1})["id"].(string)
	for _, path := range []string{"/volumes/" + id + "/action", "/snapshots/any/action"} {
		for _, body := range []obj{{}, {"os-reserve": obj{}, "os-unreserve": obj{}}, {"os-teleport": obj{}}} {
			e.fails(http.StatusBadRequest, "badRequest", "POST", path, "admin", body)
		}
	}
}
