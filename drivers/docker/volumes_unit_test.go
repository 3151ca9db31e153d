package docker

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"

	capreg "github.com/capsule-cloud/capsule/registry"
)

// The copy of an image with VOLUMEs: its config without them, the paths
// in the label, the same layers and platform; an image without any
// needs no copy.
func TestVolumeFreeConfig(t *testing.T) {
	inspect := []byte(`{"Id":"sha256:src","Architecture":"amd64","Os":"linux","Created":"2026-01-02T03:04:05Z",
		"Config":{"Cmd":["sleep","600"],"Env":["A=1"],"Volumes":{"/data":{}},"Labels":{"x":"y"}},
		"RootFS":{"Type":"layers","Layers":["sha256:l1","sha256:l2"]}}`)
	cfg, dropped, err := volumeFreeConfig(inspect)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dropped, []string{"/data"}) {
		t.Errorf("dropped %v", dropped)
	}
	var got struct {
		Architecture, OS, Created string
		Config                    map[string]any
		RootFS                    struct {
			Type    string
			DiffIDs []string `json:"diff_ids"`
		}
	}
	if err := json.Unmarshal(cfg, &got); err != nil {
		t.Fatal(err)
	}
	if got.Architecture != "amd64" || got.OS != "linux" || got.Created != "2026-01-02T03:04:05Z" ||
		got.RootFS.Type != "layers" || !reflect.DeepEqual(got.RootFS.DiffIDs, []string{"sha256:l1", "sha256:l2"}) {
		t.Errorf("copy config %s", cfg)
	}
	if _, ok := got.Config["Volumes"]; ok || got.Config["Env"] == nil {
		t.Errorf("copy's config part %v", got.Config)
	}
	labels := map[string]string{}
	for k, v := range got.Config["Labels"].(map[string]any) {
		labels[k] = v.(string)
	}
	if d := capreg.VolumeDirs(labels); !reflect.DeepEqual(d, []string{"/data"}) || labels["x"] != "y" {
		t.Errorf("copy's labels %v", labels)
	}
	// Deterministic: the same image, the same copy (the same ID).
	again, _, _ := volumeFreeConfig(inspect)
	if !bytes.Equal(again, cfg) {
		t.Errorf("two copies of one image differ:\n%s\n%s", cfg, again)
	}

	_, dropped, err = volumeFreeConfig([]byte(`{"Id":"sha256:x","Os":"linux","Config":{"Cmd":["sh"]},"RootFS":{"Type":"layers","Layers":[]}}`))
	if err != nil || dropped != nil {
		t.Errorf("an image without volumes: dropped %v, err %v", dropped, err)
	}
	if _, _, err := volumeFreeConfig([]byte(`{"RootFS":{"Type":"other"}}`)); err == nil {
		t.Errorf("a root filesystem not of layers: no error")
	}
}

// The tarball dockerd loads the copy from: its config and a manifest
// naming it and one (absent) member per layer, nothing else.
func TestConfigOnlyTarball(t *testing.T) {
	b, err := configOnlyTarball([]byte(`{"c":1}`), 2)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name], _ = io.ReadAll(tr)
	}
	if len(files) != 2 || string(files["config.json"]) != `{"c":1}` {
		t.Fatalf("members %v", files)
	}
	var man []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &man); err != nil || len(man) != 1 {
		t.Fatalf("manifest %s: %v", files["manifest.json"], err)
	}
	if man[0].Config != "config.json" || man[0].RepoTags != nil || !reflect.DeepEqual(man[0].Layers, []string{"0/layer.tar", "1/layer.tar"}) {
		t.Errorf("manifest %+v", man[0])
	}
}
