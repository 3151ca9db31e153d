package registry

import (
	"encoding/json"
	"reflect"
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
