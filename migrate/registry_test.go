package migrate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
)

// copyBase tags the registry's base image as Repo:tag without moving any
// data (blobs mounted across repositories), as an export's push leaves it.
func copyBase(t *testing.T, addr, tag string) {
	t.Helper()
	get := func(method, url string, body []byte, hdr map[string]string) (*http.Response, []byte) {
		req, err := http.NewRequest(method, "http://"+addr+url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, b
	}
	res, man := get(http.MethodGet, "/v2/capsule/busybox/manifests/latest", nil, map[string]string{"Accept": registry.MediaDockerManifest})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("base manifest: %s", res.Status)
	}
	var m struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal(man, &m); err != nil {
		t.Fatal(err)
	}
	blobs := []string{m.Config.Digest}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, dg := range blobs {
		if res, b := get(http.MethodPost, "/v2/"+Repo+"/blobs/uploads/?mount="+dg+"&from=capsule/busybox", nil, nil); res.StatusCode != http.StatusCreated {
			t.Fatalf("mount %s: %s %s", dg, res.Status, b)
		}
	}
	if res, b := get(http.MethodPut, "/v2/"+Repo+"/manifests/"+tag, man, map[string]string{"Content-Type": res.Header.Get("Content-Type")}); res.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest: %s %s", res.Status, b)
	}
}

// TestDeleteTagInRealRegistry: a settled migration's image is deleted
// from the real registry through the client the conductor uses, the
// migration is then done; the digest need not be known.
func TestDeleteTagInRealRegistry(t *testing.T) {
	addr := testenv.Registry(t)
	ctx := context.Background()
	st := storetest.SQLite(t)
	reg := &registry.Client{Address: addr}
	e := New(Options{Store: st, Registry: reg, RegistryAddress: addr, Log: nil})
	id := uuid.NewString()
	copyBase(t, addr, id)
	m := store.Migration{UUID: id, InstanceID: "i1", Step: string(StepDeleteTag), Status: lifecycle.MigrationConfirmed,
		SnapshotRef: e.Ref(&store.Migration{UUID: id})}
	if err := st.DB.Create(&m).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Resolve(ctx, Repo, id); err != nil {
		t.Fatalf("pushed tag not there: %v", err)
	}
	e.Periodic(ctx)
	if _, err := reg.Resolve(ctx, Repo, id); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("tag after the migration's tag step: %v, want ErrNotFound", err)
	}
	var got store.Migration
	st.DB.First(&got, m.ID)
	if got.Step != string(StepDone) {
		t.Errorf("step %s, want done", got.Step)
	}
	// The base image is untouched.
	if _, err := reg.Resolve(ctx, "capsule/busybox", "latest"); err != nil {
		t.Errorf("base image: %v", err)
	}
}
