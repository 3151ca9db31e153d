package image_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/store"
)

// TestBackupListQuery runs the exact listing Tempest's test_create_backup
// does: backups of one server and one type, active only, oldest first.
func TestBackupListQuery(t *testing.T) {
	e := newEnv(t, nil)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const server, otherServer = "7b7f5a7e-0000-4000-8000-000000000001", "7b7f5a7e-0000-4000-8000-000000000002"
	add := func(name string, minute int, status string, props map[string]string) {
		b, _ := json.Marshal(props)
		e.register(name, e.demoPID, "private", func(img *store.Image) {
			img.CreatedAt = base.Add(time.Duration(minute) * time.Minute)
			img.Status = status
			img.Properties = string(b)
		})
	}
	backup := func(srv, typ string) map[string]string {
		return map[string]string{"image_type": "backup", "backup_type": typ, "instance_uuid": srv}
	}
	add("b-new", 3, "active", backup(server, "daily"))
	add("b-old", 1, "active", backup(server, "daily"))
	add("b-mid", 2, "active", backup(server, "daily"))
	add("b-saving", 4, "saving", backup(server, "daily"))
	add("b-weekly", 2, "active", backup(server, "weekly"))
	add("b-other", 2, "active", backup(otherServer, "daily"))
	add("snap", 2, "active", map[string]string{"image_type": "snapshot", "instance_uuid": server})

	r := e.want(e.do("GET", "/v2/images?image_type=backup&backup_type=daily&instance_uuid="+server+
		"&status=active&sort_key=created_at&sort_dir=asc", e.alice, nil), http.StatusOK)
	var got []string
	for _, i := range r.body["images"].([]any) {
		img := i.(map[string]any)
		got = append(got, img["name"].(string))
		if img["backup_type"] != "daily" || img["instance_uuid"] != server || img["image_type"] != "backup" {
			t.Errorf("image %v lacks the backup properties", img)
		}
	}
	if want := []string{"b-old", "b-mid", "b-new"}; !reflect.DeepEqual(got, want) {
		t.Errorf("backups = %v, want %v (oldest first)", got, want)
	}
}
