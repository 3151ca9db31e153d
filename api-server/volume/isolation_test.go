package volume_test

import (
	"net/http"
	"strings"
	"testing"
)

// route is one Block Storage route with a body that would succeed for the
// resource's owner.
type route struct {
	method, path string
	body         obj
	write        bool
	owned        bool // names a project's volume or snapshot: another project gets 404
}

func volumeRoutes(vid, sid string) []route {
	return []route{
		{"GET", "/volumes", nil, false, false},
		{"GET", "/volumes/detail", nil, false, false},
		{"POST", "/volumes", obj{"volume": obj{"size": 1}}, true, false},
		{"GET", "/volumes/" + vid, nil, false, true},
		{"PUT", "/volumes/" + vid, obj{"volume": obj{"name": "x"}}, true, true},
		{"POST", "/volumes/" + vid + "/action", obj{"os-extend": obj{"new_size": 2}}, true, true},
		{"POST", "/volumes/" + vid + "/action", obj{"os-set_bootable": obj{"bootable": true}}, true, true},
		{"POST", "/volumes/" + vid + "/action", obj{"os-set_image_metadata": obj{"metadata": obj{"a": "b"}}}, true, true},
		{"POST", "/volumes/" + vid + "/action", obj{"os-unset_image_metadata": obj{"key": "a"}}, true, true},
		{"POST", "/volumes/" + vid + "/action", obj{"os-reserve": obj{}}, true, true},
		{"POST", "/volumes/" + vid + "/action", obj{"os-unreserve": obj{}}, true, true},
		{"GET", "/volumes/" + vid + "/metadata", nil, false, true},
		{"POST", "/volumes/" + vid + "/metadata", obj{"metadata": obj{"a": "b"}}, true, true},
		{"PUT", "/volumes/" + vid + "/metadata", obj{"metadata": obj{"a": "b"}}, true, true},
		{"DELETE", "/volumes/" + vid + "/metadata/k", nil, true, true},
		{"GET", "/snapshots", nil, false, false},
		{"GET", "/snapshots/detail", nil, false, false},
		{"POST", "/snapshots", obj{"snapshot": obj{"volume_id": vid}}, true, true},
		{"GET", "/snapshots/" + sid, nil, false, true},
		{"PUT", "/snapshots/" + sid, obj{"snapshot": obj{"name": "x"}}, true, true},
		{"DELETE", "/snapshots/" + sid, nil, true, true},
		{"DELETE", "/volumes/" + vid, nil, true, true},
		{"GET", "/types", nil, false, false},
		{"GET", "/types/default", nil, false, false},
		{"GET", "/types/__DEFAULT__", nil, false, false},
		{"GET", "/limits", nil, false, false},
		{"GET", "/os-availability-zone", nil, false, false},
		{"GET", "/os-quota-sets/p1", nil, false, false},
		{"GET", "/os-quota-sets/p1/defaults", nil, false, false},
	}
}

// Every route: no or a garbage token gets 401; another project's member
// gets 404 for alice's volume and snapshot (and 403 for her quotas); a
// reader gets 403 on every write.
func TestVolumeRoutesTenantIsolation(t *testing.T) {
	e := newEnv(t)
	v := e.volume("alice", obj{"size": 1, "metadata": obj{"k": "v"}})
	vid := v["id"].(string)
	sn := e.must(http.StatusAccepted, "POST", "/snapshots", "alice", obj{"snapshot": obj{"volume_id": vid}})["snapshot"].(obj)
	sid := sn["id"].(string)
	for _, rt := range volumeRoutes(vid, sid) {
		name := rt.method + " " + rt.path
		for _, tok := range []string{"", "garbage"} {
			code, out, _ := e.do(rt.method, rt.path, tok, rt.body)
			if code != http.StatusUnauthorized || out["error"] == nil {
				t.Errorf("%s with token %q: %d %v, want 401", name, tok, code, out)
			}
		}
		// bob on his own URL, naming alice's resources
		if rt.owned {
			e.fails(http.StatusNotFound, "itemNotFound", rt.method, rt.path, "bob", rt.body)
		}
		if strings.HasPrefix(rt.path, "/os-quota-sets/p1") {
			e.fails(http.StatusForbidden, "forbidden", rt.method, rt.path, "bob", rt.body)
		}
		// bob on alice's URL
		e.fails(http.StatusBadRequest, "badRequest", rt.method, "/v3/p1"+rt.path, "bob", rt.body)
		if rt.write {
			e.fails(http.StatusForbidden, "forbidden", rt.method, rt.path, "reader", rt.body)
		} else if code, out, _ := e.do(rt.method, rt.path, "reader", nil); code != http.StatusOK {
			t.Errorf("%s as reader: %d %v", name, code, out)
		}
	}
	// Admin-only routes refuse members of any project.
	e.fails(http.StatusForbidden, "forbidden", "PUT", "/os-quota-sets/p1", "alice", obj{"quota_set": obj{"volumes": 1}})
	e.fails(http.StatusForbidden, "forbidden", "DELETE", "/os-quota-sets/p1", "alice", nil)
	e.fails(http.StatusForbidden, "forbidden", "POST", "/volumes/"+vid+"/action", "alice", obj{"os-reset_status": obj{"status": "available"}})
	// Nothing of alice's changed.
	got := e.must(http.StatusOK, "GET", "/volumes/"+vid, "alice", nil)["volume"].(obj)
	if got["name"] != "" || got["size"] != float64(1) || got["status"] != "available" || got["metadata"].(obj)["k"] != "v" {
		t.Fatalf("alice's volume after the others: %v", got)
	}
}
