package docker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	dimage "github.com/docker/docker/api/types/image"
	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// archiveCounter is a proxy in front of dockerd counting the archive
// calls (docker cp) made through it (GET is a copy out of a container,
// PUT one into it) and the docker info calls.
type archiveCounter struct {
	mu       sync.Mutex
	out, in  int
	info     int // docker info calls
	sockPath string
	stop     func() // closes the proxy: dockerd stops answering
}

var (
	archivePath = regexp.MustCompile(`^(/v[0-9.]+)?/containers/[^/]+/archive$`)
	infoPath    = regexp.MustCompile(`^(/v[0-9.]+)?/info$`)
)

func (c *archiveCounter) counts() (out, in int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out, c.in
}

// countingDriver is a docker driver whose calls to dockerd go through an
// archiveCounter.
func countingDriver(t *testing.T) (*docker.Driver, *archiveCounter) {
	t.Helper()
	host := testenv.DockerHost(t)
	sock, ok := strings.CutPrefix(host, "unix://")
	if !ok {
		t.Skipf("the archive counter proxies a unix socket; dockerd is at %s", host)
	}
	c := &archiveCounter{sockPath: filepath.Join(t.TempDir(), "d.sock")}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: "docker"})
			r.Out.Host = "docker"
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}
	l, err := net.Listen("unix", c.sockPath)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if infoPath.MatchString(r.URL.Path) {
			c.mu.Lock()
			c.info++
			c.mu.Unlock()
		}
		if archivePath.MatchString(r.URL.Path) {
			c.mu.Lock()
			switch r.Method {
			case http.MethodGet:
				c.out++
			case http.MethodPut:
				c.in++
			}
			c.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(l) }()
	c.stop = func() { srv.Close() }
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := docker.New(ctx, docker.Options{
		Host:         "unix://" + c.sockPath,
		StopTimeout:  5 * time.Second,
		SandboxImage: testenv.Image(t),
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		NetworkMode:  testenv.NetworkMode(),
	})
	if err != nil {
		t.Fatalf("docker.New through the counter: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d, c
}

// shadowImage builds, as tag ref, base with /etc/shadow holding content
// (mode 0640, owner 0:42, as Debian's).
func shadowImage(t testing.TB, d *docker.Driver, base, ref, content string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name, body string
		mode       int64
	}{
		{"Dockerfile", "FROM " + base + "\nCOPY --chown=0:42 shadow /etc/shadow\n", 0o644},
		{"shadow", content, 0o640},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := d.Client().ImageBuild(ctx, &buf, build.ImageBuildOptions{Tags: []string{ref}, Remove: true, ForceRemove: true})
	if err != nil {
		t.Fatalf("build %s: %v", ref, err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	img, err := d.Client().ImageInspect(ctx, ref)
	if err != nil {
		t.Fatalf("build %s: %v: %s", ref, err, out)
	}
	t.Cleanup(func() {
		_, _ = d.Client().ImageRemove(context.Background(), img.ID, dimage.RemoveOptions{Force: true, PruneChildren: true})
	})
	return img.ID
}

// rootHashIn is root's hash in instance id's /etc/shadow, with the file.
func rootHashIn(t *testing.T, d *docker.Driver, id string) (string, containerFile) {
	t.Helper()
	f := readContainerFile(t, d, id, "/etc/shadow")
	for _, l := range strings.Split(f.body, "\n") {
		if fs := strings.Split(l, ":"); len(fs) > 2 && fs[0] == "root" {
			return fs[1], f
		}
	}
	t.Fatalf("no root in /etc/shadow of %s: %q", id, f.body)
	return "", f
}

// TestBuildPasswordFromTheShadowCache: a create with an adminPass puts
// its hash in root's line of the new disk's /etc/shadow (the image's,
// mode and owner kept). The image's /etc/shadow is read out of the first
// container only: later creates and rebuilds of the same image ID write
// the file with their first-boot files, without reading it again. A tag
// moved to another image is that image's /etc/shadow. An image without
// /etc/shadow is built without a password and, once known, with no
// archive call at all.
func TestBuildPasswordFromTheShadowCache(t *testing.T) {
	base := testenv.Image(t)
	plain := newDriver(t)
	d, cnt := countingDriver(t)
	if !d.Capabilities().PasswordAtCreate {
		t.Fatal("the docker driver does not set passwords at create")
	}
	ctx := drivertest.Ctx(t)
	ref := "capsuletest-shadow:" + uuid.NewString()[:8]
	idA := shadowImage(t, plain, base, ref, "root:*:19000:0:99999:7:::\nimagea:!:19000::::::\n")

	// A miss: read out of the new container, written back.
	s1 := drivertest.Spec(ref)
	s1.AdminPassHash = "$6$salt1$hash1"
	drivertest.Create(t, d, s1)
	out, in := cnt.counts()
	if out != 1 || in != 1 {
		t.Errorf("first create: %d copies out, %d in; want 1 and 1", out, in)
	}
	h, f := rootHashIn(t, plain, s1.ID)
	if h != s1.AdminPassHash || !strings.Contains(f.body, "\nimagea:!:19000::::::\n") || f.mode != 0o640 || f.uid != 0 || f.gid != 42 {
		t.Errorf("first create's /etc/shadow: root hash %q, mode %o, owner %d:%d, body %q; want %q, 0640, 0:42, image A's",
			h, f.mode, f.uid, f.gid, f.body, s1.AdminPassHash)
	}

	// A replayed create (the container is there) sets the password in
	// the file the container has, as the agent did after any create.
	replay := s1
	replay.AdminPassHash = "$6$salt1r$hash1r"
	if err := d.Create(ctx, replay); err != nil {
		t.Fatalf("replayed create: %v", err)
	}
	if h, _ := rootHashIn(t, plain, s1.ID); h != replay.AdminPassHash {
		t.Errorf("after a replayed create root's hash is %q, want %q", h, replay.AdminPassHash)
	}
	out, in = cnt.counts()

	// A hit, with first-boot files: one copy in for both, none out.
	s2 := drivertest.Spec(ref)
	s2.AdminPassHash = "$6$salt2$hash2"
	s2.Files = []drivers.File{{Path: "/var/lib/capsule-test/boot", Mode: 0o700, Content: []byte("#!/bin/sh\n")}}
	drivertest.Create(t, d, s2)
	out2, in2 := cnt.counts()
	if out2 != out || in2 != in+1 {
		t.Errorf("second create: %d copies out, %d in; want 0 and 1", out2-out, in2-in)
	}
	h, f = rootHashIn(t, plain, s2.ID)
	if h != s2.AdminPassHash || !strings.Contains(f.body, "\nimagea:!:19000::::::\n") || f.mode != 0o640 || f.gid != 42 {
		t.Errorf("second create's /etc/shadow: root hash %q, mode %o, gid %d, body %q; want %q, 0640, 42, image A's",
			h, f.mode, f.gid, f.body, s2.AdminPassHash)
	}
	if b := readContainerFile(t, plain, s2.ID, "/var/lib/capsule-test/boot"); b.body != "#!/bin/sh\n" || b.mode != 0o700 {
		t.Errorf("first-boot file beside the password: %q mode %o", b.body, b.mode)
	}

	// The tag moves to an image with another /etc/shadow: another ID,
	// read once more.
	idB := shadowImage(t, plain, base, ref, "root:*:19001:0:99999:7:::\nimageb:!:19001::::::\n")
	if idB == idA {
		t.Fatalf("the re-tagged image has the same ID %s", idA)
	}
	s3 := drivertest.Spec(ref)
	s3.AdminPassHash = "$6$salt3$hash3"
	drivertest.Create(t, d, s3)
	out3, _ := cnt.counts()
	if out3 != out2+1 {
		t.Errorf("create of the re-tagged image: %d copies out, want 1", out3-out2)
	}
	h, f = rootHashIn(t, plain, s3.ID)
	if h != s3.AdminPassHash || !strings.Contains(f.body, "\nimageb:!:19001::::::\n") || strings.Contains(f.body, "imagea") {
		t.Errorf("re-tagged image's /etc/shadow: root hash %q, body %q; want %q and image B's", h, f.body, s3.AdminPassHash)
	}

	// A rebuild onto it (known now): no copy out.
	s1.AdminPassHash = "$6$salt4$hash4"
	if err := d.Rebuild(ctx, s1, time.Second); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	out4, _ := cnt.counts()
	if out4 != out3 {
		t.Errorf("rebuild: %d copies out, want 0", out4-out3)
	}
	h, f = rootHashIn(t, plain, s1.ID)
	if h != s1.AdminPassHash || !strings.Contains(f.body, "\nimageb:!:19001::::::\n") {
		t.Errorf("rebuilt /etc/shadow: root hash %q, body %q; want %q and image B's", h, f.body, s1.AdminPassHash)
	}

	// No /etc/shadow: built without a password; once known, no archive
	// call at all (no files, no keys).
	for i := range 2 {
		before, beforeIn := cnt.counts()
		s := drivertest.Spec(base)
		s.AdminPassHash = "$6$salt5$hash5"
		drivertest.Create(t, d, s)
		if err := d.Start(ctx, s.ID); err != nil {
			t.Fatalf("start of a server without /etc/shadow: %v", err)
		}
		after, afterIn := cnt.counts()
		if afterIn != beforeIn || (i == 1 && after != before) {
			t.Errorf("create %d of an image without /etc/shadow: %d copies out, %d in", i+1, after-before, afterIn-beforeIn)
		}
		if _, _, err := plain.Client().CopyFromContainer(ctx, docker.ContainerName(s.ID), "/etc/shadow"); err == nil {
			t.Errorf("create %d of an image without /etc/shadow made one", i+1)
		}
	}
}

// TestChangePasswordReadsTheServersShadow: changePassword reads the
// server's /etc/shadow as the guest left it, not its image's.
func TestChangePasswordReadsTheServersShadow(t *testing.T) {
	base := testenv.Image(t)
	plain := newDriver(t)
	d, cnt := countingDriver(t)
	ctx := drivertest.Ctx(t)
	ref := "capsuletest-shadow:" + uuid.NewString()[:8]
	shadowImage(t, plain, base, ref, "root:*:19000:0:99999:7:::\n")
	s := drivertest.Spec(ref)
	s.AdminPassHash = "$6$salt1$hash1"
	drivertest.Boot(t, d, s)
	if code, out, err := execIn(ctx, plain.Client(), docker.ContainerName(s.ID), "sh", "-c",
		"echo 'guest:!:19002::::::' >> /etc/shadow"); err != nil || code != 0 {
		t.Fatalf("guest edit of /etc/shadow: %d %v %s", code, err, out)
	}
	before, _ := cnt.counts()
	if err := d.SetAdminPassword(ctx, s.ID, "$6$salt2$hash2"); err != nil {
		t.Fatalf("set password: %v", err)
	}
	if after, _ := cnt.counts(); after != before+1 {
		t.Errorf("changePassword: %d copies out, want 1", after-before)
	}
	h, f := rootHashIn(t, plain, s.ID)
	if h != "$6$salt2$hash2" || !strings.Contains(f.body, "\nguest:!:19002::::::\n") || f.gid != 42 || f.mode != 0o640 {
		t.Errorf("after changePassword: root hash %q, body %q, mode %o gid %d; want the guest's line kept", h, f.body, f.mode, f.gid)
	}
}

// TestFingerprintReusesDockerInfo: the heartbeat's fingerprints reuse one
// docker info (each makes dockerd run two processes) and still fail as
// soon as dockerd stops answering.
func TestFingerprintReusesDockerInfo(t *testing.T) {
	d, c := countingDriver(t)
	ctx := drivertest.Ctx(t)
	c.mu.Lock()
	before := c.info
	c.mu.Unlock()
	for range 3 {
		hi, err := d.Fingerprint(ctx)
		if err != nil || hi.VCPUs <= 0 || hi.MemoryMB <= 0 {
			t.Fatalf("fingerprint: %+v, %v", hi, err)
		}
	}
	c.mu.Lock()
	got := c.info - before
	c.mu.Unlock()
	if got != 1 {
		t.Errorf("three fingerprints made %d docker info calls, want 1", got)
	}
	c.stop()
	if _, err := d.Fingerprint(ctx); err == nil {
		t.Error("fingerprint succeeded with dockerd not answering (a cached docker info)")
	}
}
