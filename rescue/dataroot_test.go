package rescue

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRoot builds a Docker data root the way dockerd 20.10-28 lays out an
// overlay2 container, without dockerd.
type fakeRoot struct {
	t    *testing.T
	root string
	n    int
}

func newFakeRoot(t *testing.T) *fakeRoot {
	r := &fakeRoot{t: t, root: filepath.Join(t.TempDir(), "docker")}
	mkdir(t, filepath.Join(r.root, "containers"))
	mkdir(t, filepath.Join(r.root, "image/overlay2/layerdb/mounts"))
	mkdir(t, filepath.Join(r.root, "overlay2/l"))
	mkdir(t, filepath.Join(r.root, "volumes"))
	return r
}

func (r *fakeRoot) id(prefix string) string {
	r.n++
	return fmt.Sprintf("%x", sha256.Sum256([]byte(fmt.Sprint(prefix, r.n))))
}

// layer creates an overlay2 layer directory and its short link.
func (r *fakeRoot) layer(id string) (diff, link string) {
	r.n++
	link = fmt.Sprintf("SHORT%021d", r.n)
	diff = filepath.Join(r.root, "overlay2", id, "diff")
	mkdir(r.t, diff)
	symlink(r.t, "../"+id+"/diff", filepath.Join(r.root, "overlay2/l", link))
	return diff, link
}

type fakeContainer struct {
	id, instance, name, role, driver string
	running                          bool
	mounts                           map[string]map[string]any
	upper, init, image               string // diff directories
}

// container writes config.v2.json and, for overlay2, its three layers.
func (r *fakeRoot) container(instance, name, role, driver string) *fakeContainer {
	c := &fakeContainer{id: r.id("c"), instance: instance, name: name, role: role, driver: driver, mounts: map[string]map[string]any{}}
	if driver == "overlay2" {
		mount := r.id("a")
		var imgLink, initLink string
		c.image, imgLink = r.layer(r.id("b"))
		c.init, initLink = r.layer(mount + "-init")
		c.upper, _ = r.layer(mount)
		mkfile(r.t, filepath.Join(r.root, "overlay2", mount, "lower"), []byte("l/"+initLink+":l/"+imgLink), 0o644)
		mkfile(r.t, filepath.Join(r.root, "image/overlay2/layerdb/mounts", c.id, "mount-id"), []byte(mount), 0o644)
	}
	r.save(c)
	return c
}

func (r *fakeRoot) save(c *fakeContainer) {
	labels := map[string]string{LabelInstance: c.instance, "capsule.managed": "true"}
	if c.name != "" {
		labels[LabelName] = c.name
	}
	if c.role != "" {
		labels[LabelRole] = c.role
	}
	dir := filepath.Join(r.root, "containers", c.id)
	cfg := map[string]any{
		"ID": c.id, "Name": "/capsule-" + c.instance + map[string]string{"": "", RoleSandbox: "-sandbox"}[c.role], "Driver": c.driver, "Image": "sha256:feed",
		"Created": "2024-01-02T03:04:05Z",
		"Config":  map[string]any{"Image": "127.0.0.1:5050/capsule/busybox:latest", "Labels": labels},
		"State": map[string]any{"Running": c.running, "Pid": 0, "ExitCode": 143,
			"StartedAt": "2024-01-02T03:04:06Z", "FinishedAt": "2024-01-02T04:00:00Z"},
		"MountPoints": c.mounts,
		"HostsPath":   "/somewhere/else/containers/" + c.id + "/hosts",
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	mkfile(r.t, filepath.Join(dir, "config.v2.json"), b, 0o600)
}

func TestFindAndLayers(t *testing.T) {
	r := newFakeRoot(t)
	web1 := r.container("11111111-1111-1111-1111-111111111111", "web", "", "overlay2")
	r.container("11111111-1111-1111-1111-111111111111", "web", RoleSandbox, "overlay2")
	web2 := r.container("22222222-2222-2222-2222-222222222222", "web", "", "overlay2")
	db := r.container("33333333-3333-3333-3333-333333333333", "db", "", "devicemapper")
	mkfile(t, filepath.Join(r.root, "containers", r.id("d"), "config.v2.json"), []byte("{half-writ"), 0o600)

	all, err := Containers(r.root)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 || !strings.HasPrefix(all[0].State, "unreadable") {
		t.Fatalf("Containers: %d, want 5 (the corrupt one first, unreadable): %+v", len(all), all)
	}
	c, err := Find(r.root, web1.instance)
	if err != nil || c.ID != web1.id || c.Role != "" || c.State != "exited (143)" {
		t.Fatalf("Find by UUID: %+v, %v (want the workload, not the sandbox)", c, err)
	}
	_, err = Find(r.root, "web")
	if err == nil || !strings.Contains(err.Error(), "ambiguous") || !strings.Contains(err.Error(), web1.instance) || !strings.Contains(err.Error(), web2.instance) {
		t.Fatalf("Find by a shared name: %v, want ambiguous listing both", err)
	}
	if c, err := Find(r.root, "db"); err != nil || c.ID != db.id {
		t.Fatalf("Find by name: %+v, %v", c, err)
	}
	if c, err := Find(r.root, web2.id[:12]); err != nil || c.ID != web2.id {
		t.Fatalf("Find by container ID: %+v, %v", c, err)
	}
	if _, err := Find(r.root, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Find unknown: %v", err)
	}

	ls, err := Layers(r.root, c)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{web1.upper, web1.init, web1.image}
	roles := []string{"writable", "init", "image"}
	if len(ls) != 3 {
		t.Fatalf("Layers: %+v", ls)
	}
	for i, l := range ls {
		if l.Path != want[i] || l.Role != roles[i] {
			t.Errorf("layer %d: %+v, want %s (%s)", i, l, want[i], roles[i])
		}
	}
	dbc, _ := Find(r.root, "db")
	if _, err := Layers(r.root, dbc); err == nil || !strings.Contains(err.Error(), `"devicemapper"`) {
		t.Errorf("Layers of a devicemapper container: %v, want an error naming the driver", err)
	}
}

func TestDataRootOfAnotherDriver(t *testing.T) {
	root := t.TempDir()
	mkdir(t, filepath.Join(root, "containers"))
	mkdir(t, filepath.Join(root, "image/devicemapper"))
	if _, err := Containers(root); err == nil || !strings.Contains(err.Error(), "devicemapper") {
		t.Fatalf("Containers on a devicemapper root: %v", err)
	}
	if _, err := Containers(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a Docker data root") {
		t.Fatalf("Containers on an empty dir: %v", err)
	}
}

func TestLayersRefusesForeignLinks(t *testing.T) {
	r := newFakeRoot(t)
	c := r.container("44444444-4444-4444-4444-444444444444", "x", "", "overlay2")
	// A lower entry whose link points outside overlay2/.
	symlink(t, "/etc", filepath.Join(r.root, "overlay2/l/EVIL"))
	mount := strings.TrimSpace(readString(t, filepath.Join(r.root, "image/overlay2/layerdb/mounts", c.id, "mount-id")))
	if err := os.WriteFile(filepath.Join(r.root, "overlay2", mount, "lower"), []byte("l/EVIL"), 0o644); err != nil {
		t.Fatal(err)
	}
	cc, err := Find(r.root, c.instance)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Layers(r.root, cc); err == nil || !strings.Contains(err.Error(), "unexpected link target") {
		t.Fatalf("Layers with a foreign link: %v", err)
	}
}

func TestRescueFakeRoot(t *testing.T) {
	r := newFakeRoot(t)
	c := r.container("55555555-5555-5555-5555-555555555555", "app", "", "overlay2")
	c.mounts["/var/lib/data"] = map[string]any{"Type": "volume", "Name": "appdata", "Driver": "local",
		"Destination": "/var/lib/data", "Source": "/old/root/volumes/appdata/_data", "RW": true}
	c.mounts["/srv"] = map[string]any{"Type": "bind", "Source": "/srv/app", "Destination": "/srv", "RW": true}
	r.save(c)
	mkfile(t, filepath.Join(c.image, "bin/true"), []byte("true"), 0o755)
	mkfile(t, filepath.Join(c.init, "etc/hosts"), nil, 0o644)
	mkfile(t, filepath.Join(c.upper, "home/app/notes.txt"), []byte("tenant data"), 0o644)
	mkfile(t, filepath.Join(r.root, "containers", c.id, "hosts"), []byte("10.0.0.5 app\n"), 0o644)
	mkfile(t, filepath.Join(r.root, "volumes/appdata/_data/db/rows"), []byte("rows"), 0o600)

	to := filepath.Join(t.TempDir(), "rescued")
	m, err := Rescue(context.Background(), Options{DataRoot: r.root, Server: "app", To: to})
	if err != nil {
		t.Fatalf("Rescue: %v", err)
	}
	if got := readString(t, filepath.Join(to, "home/app/notes.txt")); got != "tenant data" {
		t.Errorf("notes.txt = %q", got)
	}
	if got := readString(t, filepath.Join(to, "bin/true")); got != "true" {
		t.Errorf("bin/true = %q", got)
	}
	if got := readString(t, filepath.Join(to, "etc/hosts")); got != "10.0.0.5 app\n" {
		t.Errorf("/etc/hosts = %q, want Docker's per-container file", got)
	}
	if got := readString(t, filepath.Join(to, VolumesDir, "var/lib/data/db/rows")); got != "rows" {
		t.Errorf("volume file = %q", got)
	}
	if fi, err := os.Stat(to); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("destination mode %v (err %v), want 0700", fi.Mode(), err)
	}
	got, err := ReadManifest(to)
	if err != nil {
		t.Fatal(err)
	}
	if got.Server != c.instance || got.Name != "app" || got.ContainerID != c.id || len(got.Layers) != 3 ||
		len(got.Volumes) != 1 || got.Volumes[0].CopiedTo != VolumesDir+"/var/lib/data" || got.Volumes[0].Files != 1 ||
		got.BytesCopied != m.BytesCopied || got.BytesCopied != int64(len("true")+len("tenant data")+len("10.0.0.5 app\n")+len("rows")) {
		t.Errorf("manifest %+v", got)
	}
	if len(got.NotCopied) != 1 || !strings.Contains(got.NotCopied[0], "/srv") {
		t.Errorf("not copied: %q, want the bind mount", got.NotCopied)
	}

	if _, err := Rescue(context.Background(), Options{DataRoot: r.root, Server: "app", To: filepath.Join(r.root, "tmp/x")}); err == nil || !strings.Contains(err.Error(), "inside the data root") {
		t.Errorf("Rescue into the data root: %v", err)
	}
	// A second rescue into the same, now non-empty, directory is refused.
	if _, err := Rescue(context.Background(), Options{DataRoot: r.root, Server: "app", To: to}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Rescue into a non-empty directory: %v", err)
	}
}

// TestRescueUnreadableConfig: a damaged config.v2.json (maybe why dockerd
// will not start) still leaves the container listed and rescuable by ID.
func TestRescueUnreadableConfig(t *testing.T) {
	r := newFakeRoot(t)
	c := r.container("66666666-6666-6666-6666-666666666666", "broken", "", "overlay2")
	mkfile(t, filepath.Join(c.upper, "srv/important"), []byte("keep me"), 0o644)
	mkfile(t, filepath.Join(r.root, "containers", c.id, "config.v2.json"), []byte("\x00\x00garbage"), 0o600)

	all, err := Containers(r.root)
	if err != nil || len(all) != 1 || all[0].ID != c.id || !strings.HasPrefix(all[0].State, "unreadable") {
		t.Fatalf("Containers: %+v, %v", all, err)
	}
	if _, err := Find(r.root, c.instance); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Find by UUID without a readable config: %v", err)
	}
	to := filepath.Join(t.TempDir(), "out")
	m, err := Rescue(context.Background(), Options{DataRoot: r.root, Server: c.id[:12], To: to})
	if err != nil {
		t.Fatalf("Rescue by container ID: %v", err)
	}
	if got := readString(t, filepath.Join(to, "srv/important")); got != "keep me" || m.ContainerID != c.id || m.Server != "" {
		t.Fatalf("rescued %q, manifest %+v", got, m)
	}
}

// TestForgedLabelsDoNotMisleadFind: a workload whose labels came from its
// image (a container made before the driver set all of its own) claiming
// to be a sandbox, or another server, is still found as its own server's
// workload: the container's name, which only the driver sets, decides.
func TestForgedLabelsDoNotMisleadFind(t *testing.T) {
	r := newFakeRoot(t)
	victim := r.container("44444444-4444-4444-4444-444444444444", "victim", "", "overlay2")
	forged := r.container("55555555-5555-5555-5555-555555555555", "tenant", "", "overlay2")
	// The tenant's image baked in capsule.role=sandbox and the victim's id.
	forged.role, forged.instance = RoleSandbox, victim.instance
	p := filepath.Join(r.root, "containers", forged.id, "config.v2.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["Config"].(map[string]any)["Labels"] = map[string]string{LabelInstance: victim.instance, LabelRole: RoleSandbox, "capsule.managed": "true"}
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	mkfile(t, p, b, 0o600)
	// Another one's image claims to be the victim's workload.
	impostor := r.container("66666666-6666-6666-6666-666666666666", "victim", "", "overlay2")
	p = filepath.Join(r.root, "containers", impostor.id, "config.v2.json")
	if b, err = os.ReadFile(p); err != nil {
		t.Fatal(err)
	}
	mkfile(t, p, []byte(strings.Replace(string(b), `"capsule.instance":"`+impostor.instance, `"capsule.instance":"`+victim.instance, 1)), 0o600)

	if c, err := Find(r.root, victim.instance); err != nil || c.ID != victim.id {
		t.Fatalf("Find the victim: %+v, %v, want its own container", c, err)
	}
	c, err := Find(r.root, "55555555-5555-5555-5555-555555555555")
	if err != nil || c.ID != forged.id || c.Role != "" {
		t.Fatalf("Find the tenant's server: %+v, %v, want its workload", c, err)
	}
}
