package registry

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestWithoutVolumes(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux","created":"2026-01-02T03:04:05Z",
		"config":{"Env":["PATH=/bin"],"Cmd":["sh"],"Volumes":{"/data":{},"/var/log":{}},"WorkingDir":"/w","Labels":{"a":"b"}},
		"container_config":{"Cmd":["/bin/sh","-c","#(nop) VOLUME [/data]"],"Volumes":{"/data":{}}},
		"history":[{"created_by":"VOLUME /data","empty_layer":true}],
		"rootfs":{"type":"layers","diff_ids":["sha256:aa","sha256:bb"]}}`)
	out, dropped, err := WithoutVolumes(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/data", "/var/log"}; !reflect.DeepEqual(dropped, want) {
		t.Errorf("dropped %v, want %v", dropped, want)
	}
	var got, orig map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("rewritten config is not JSON: %v\n%s", err, out)
	}
	if err := json.Unmarshal(cfg, &orig); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"config", "container_config"} {
		if v, ok := got[k].(map[string]any)["Volumes"]; ok {
			t.Errorf("%s.Volumes still there: %v", k, v)
		}
		delete(orig[k].(map[string]any), "Volumes")
	}
	// The paths are kept for the driver, which makes the directories.
	labels := got["config"].(map[string]any)["Labels"].(map[string]any)
	if v := labels[LabelVolumeDirs]; v != `["/data","/var/log"]` {
		t.Errorf("label %s = %v", LabelVolumeDirs, v)
	}
	if d := VolumeDirs(map[string]string{LabelVolumeDirs: labels[LabelVolumeDirs].(string)}); !reflect.DeepEqual(d, []string{"/data", "/var/log"}) {
		t.Errorf("VolumeDirs of the label: %v", d)
	}
	orig["config"].(map[string]any)["Labels"].(map[string]any)[LabelVolumeDirs] = labels[LabelVolumeDirs]
	// Everything else, the layers first, is as it was.
	if !reflect.DeepEqual(got, orig) {
		t.Errorf("rewrite changed more than the volumes:\n got %v\nwant %v", got, orig)
	}
	// Idempotent: a stripped config comes back byte for byte.
	again, d2, err := WithoutVolumes(out)
	if err != nil || string(again) != string(out) || d2 != nil {
		t.Errorf("second rewrite: %s %v %v", again, d2, err)
	}
}

// A config without labels gets them; paths already in the label (an
// image stripped before) are kept with the new ones, cleaned.
func TestWithoutVolumesMergesTheLabel(t *testing.T) {
	cfg := []byte(`{"config":{"Labels":{"a":"b","capsule.volume_dirs":"[\"/old\",\"rel/dir/\"]"},"Volumes":{"/new/../data/":{},"/":{}}}}`)
	out, dropped, err := WithoutVolumes(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/", "/new/../data/"}; !reflect.DeepEqual(dropped, want) {
		t.Errorf("dropped %v, want %v", dropped, want)
	}
	var got struct {
		Config struct{ Labels map[string]string }
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if d := VolumeDirs(got.Config.Labels); !reflect.DeepEqual(d, []string{"/data", "/old", "/rel/dir"}) || got.Config.Labels["a"] != "b" {
		t.Errorf("labels %v, dirs %v", got.Config.Labels, d)
	}
	out, _, err = WithoutVolumes([]byte(`{"config":{"Labels":null,"Volumes":{"/d":{}}}}`))
	if err != nil || !strings.Contains(string(out), `"Labels":{"capsule.volume_dirs":"[\"/d\"]"}`) {
		t.Errorf("config with null labels: %s %v", out, err)
	}
	if d := VolumeDirs(map[string]string{LabelVolumeDirs: "not json"}); d != nil {
		t.Errorf("VolumeDirs of a bad label: %v", d)
	}
}

func TestWithoutVolumesKeepsAVolumeFreeConfigByteForByte(t *testing.T) {
	for _, cfg := range []string{
		`{"config":{"Cmd":["sh"]},  "rootfs":{"type":"layers","diff_ids":[]}}`,
		`{"config":{"Cmd":["sh"],"Volumes":null}}`,
		`{"config":{"Volumes":{}}, "container_config":null}`,
		`{"config":null}`,
		`{"architecture":"amd64"}`,
	} {
		out, dropped, err := WithoutVolumes([]byte(cfg))
		if err != nil || string(out) != cfg || dropped != nil {
			t.Errorf("WithoutVolumes(%s) = %s, %v, %v; want it unchanged", cfg, out, dropped, err)
		}
	}
}

func TestWithoutVolumesRefusesWhatIsNotAConfig(t *testing.T) {
	for _, cfg := range []string{``, `[]`, `null`, `{"config":[1]}`, `{"config":{"Volumes":["/data"]}}`, `{"config":{"Volumes":5}}`} {
		if out, _, err := WithoutVolumes([]byte(cfg)); err == nil {
			t.Errorf("WithoutVolumes(%q) = %s, want an error", cfg, out)
		}
	}
}

func FuzzWithoutVolumes(f *testing.F) {
	f.Add([]byte(`{"config":{"Cmd":["sh"],"Volumes":{"/data":{}}},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}`))
	f.Add([]byte(`{"config":{"Volumes":{}}}`))
	f.Fuzz(func(t *testing.T, cfg []byte) {
		out, _, err := WithoutVolumes(cfg)
		if err != nil {
			return
		}
		var top struct {
			Config *struct{ Volumes map[string]any }
		}
		if err := json.Unmarshal(out, &top); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out)
		}
		if top.Config != nil && len(top.Config.Volumes) > 0 {
			t.Fatalf("volumes left: %s", out)
		}
		again, dropped, err := WithoutVolumes(out)
		if err != nil || string(again) != string(out) || dropped != nil {
			t.Fatalf("not idempotent: %s -> %s %v %v", out, again, dropped, err)
		}
	})
}
