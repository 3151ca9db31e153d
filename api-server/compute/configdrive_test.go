package compute

import (
	"testing"

	"github.com/capsule-cloud/capsule/store"
)

// config_drive on create takes Nova's booleans, is kept on the server and
// shown as Nova shows it ("True" or ""); anything else is a 400.
func TestCreateConfigDrive(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		value string
		want  bool
	}{{`true`, true}, {`"True"`, true}, {`"1"`, true}, {`false`, false}, {`"false"`, false}} {
		resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"cd","imageRef":"`+f.image+`","flavorRef":"1","config_drive":`+c.value+`}}`)
		if resp.StatusCode != 202 {
			t.Fatalf("config_drive %s: %d %v", c.value, resp.StatusCode, body)
		}
		id := body["server"].(map[string]any)["id"].(string)
		var inst store.Instance
		if err := f.st.DB.Where("id = ?", id).First(&inst).Error; err != nil {
			t.Fatal(err)
		}
		if inst.ConfigDrive != c.want {
			t.Errorf("config_drive %s stored %v, want %v", c.value, inst.ConfigDrive, c.want)
		}
		_, show := f.do("GET", "/v2.1/servers/"+id, "demo", "")
		want := ""
		if c.want {
			want = "True"
		}
		if got := show["server"].(map[string]any)["config_drive"]; got != want {
			t.Errorf("config_drive %s shown %q, want %q", c.value, got, want)
		}
	}
	for _, bad := range []string{`"maybe"`, `3`, `{}`} {
		resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"cd","imageRef":"`+f.image+`","flavorRef":"1","config_drive":`+bad+`}}`)
		if resp.StatusCode != 400 {
			t.Errorf("config_drive %s: %d %v, want 400", bad, resp.StatusCode, body)
		}
	}
}

// force_config_drive gives every new server a config drive.
func TestForceConfigDrive(t *testing.T) {
	f := newFixture(t)
	f.svc.opts.ForceConfigDrive = true
	id := f.create("demo", "forced")
	var inst store.Instance
	if err := f.st.DB.Where("id = ?", id).First(&inst).Error; err != nil || !inst.ConfigDrive {
		t.Errorf("forced config drive: %v %v", inst.ConfigDrive, err)
	}
}
