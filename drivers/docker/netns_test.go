package docker_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/vishvananda/netns"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/netnsfile"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// newNetnsDriver is a driver in network mode netns with a namespace
// directory of the test's own; a dockerd without Capsule's runtime skips
// the test (fails it when the run asks for mode netns).
func newNetnsDriver(t *testing.T) (*docker.Driver, string) {
	t.Helper()
	host := testenv.DockerHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := filepath.Join("/run/capsule/netns", "test-"+strings.ReplaceAll(t.Name(), "/", "-"))
	d, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, SandboxImage: testenv.Image(t),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NetworkMode: docker.NetworkNetns, NetnsDir: dir})
	if err != nil && strings.Contains(err.Error(), "needs the OCI runtime") {
		testenv.Require(t, testenv.NetworkMode() != docker.NetworkNetns, "%v", err)
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { d.Close(); _ = os.Remove(dir) })
	return d, dir
}

func sameNS(t *testing.T, a, b string) bool {
	t.Helper()
	ha, err := netns.GetFromPath(a)
	if err != nil {
		t.Fatalf("open %s: %v", a, err)
	}
	defer ha.Close()
	hb, err := netns.GetFromPath(b)
	if err != nil {
		t.Fatalf("open %s: %v", b, err)
	}
	defer hb.Close()
	return ha.Equal(hb)
}

// TestNetnsOneContainer: in mode netns a networked server is one
// container, with its own hostname and DNS, in the namespace the driver
// keeps, which survives stop, start and reboots, and goes with Destroy
// (with its map entry); a namespace left without its container is listed
// as an orphan.
func TestNetnsOneContainer(t *testing.T) {
	d, dir := newNetnsDriver(t)
	ctx := drivertest.Ctx(t)
	cli := d.Client()
	spec := drivertest.Spec(testenv.Image(t))
	spec.Networked = true
	spec.Hostname = "one-container"
	spec.DNS = []string{"192.0.2.53"}
	drivertest.Create(t, d, spec)
	nsPath := filepath.Join(dir, spec.ID)

	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", docker.LabelInstance+"="+spec.ID))})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 {
		t.Fatalf("%d containers for the server, want 1: %+v", len(cs), cs)
	}
	cid := cs[0].ID
	p, err := d.Sandbox(ctx, spec.ID)
	if err != nil || p != nsPath || !netnsfile.IsNamespace(nsPath) {
		t.Fatalf("Sandbox before the first start = %q, %v; want the namespace %s", p, err, nsPath)
	}
	if m, err := netnsfile.ReadMap(netnsfile.MapDir, cid); err != nil || m != nsPath {
		t.Fatalf("map of %s = %q, %v", cid, m, err)
	}
	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatalf("start: %v", err)
	}
	inNS := func(what string) {
		t.Helper()
		c, err := cli.ContainerInspect(ctx, cid)
		if err != nil || c.State.Pid <= 0 {
			t.Fatalf("%s: inspect: %v", what, err)
		}
		if !sameNS(t, nsPath, "/proc/"+strconv.Itoa(c.State.Pid)+"/ns/net") {
			t.Fatalf("%s: the workload is not in the namespace %s", what, nsPath)
		}
	}
	inNS("first start")
	if code, out, err := execIn(ctx, cli, cid, "sh", "-c", "hostname; cat /etc/resolv.conf"); err != nil || code != 0 ||
		!strings.Contains(out, "one-container") || !strings.Contains(out, "192.0.2.53") {
		t.Errorf("hostname and resolv.conf: %d %q %v", code, out, err)
	}
	for _, hard := range []bool{false, true} {
		if err := d.Reboot(ctx, spec.ID, hard); err != nil {
			t.Fatalf("reboot hard=%v: %v", hard, err)
		}
		inNS("reboot")
	}
	if err := d.Stop(ctx, spec.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	if !netnsfile.IsNamespace(nsPath) {
		t.Fatal("stop took the namespace away")
	}
	// A host reboot takes the namespace (its mount) away: start makes it
	// again.
	if err := netnsfile.Remove(nsPath); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatalf("start without the namespace: %v", err)
	}
	inNS("start after the namespace went")
	list, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range list {
		if st.ID == spec.ID && st.Power != drivers.PowerRunning {
			t.Errorf("listed as %+v", st)
		}
	}
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(nsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file left after Destroy: %v", err)
	}
	if _, err := netnsfile.ReadMap(netnsfile.MapDir, cid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("map entry left after Destroy: %v", err)
	}

	// A namespace without its container (a create cut short) is an
	// orphan for the agent to Destroy.
	orphan := drivertest.Spec("").ID
	if err := netnsfile.Make(filepath.Join(dir, orphan)); err != nil {
		t.Fatal(err)
	}
	list, err = d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, st := range list {
		found = found || (st.ID == orphan && st.Power == drivers.PowerNoState)
	}
	if !found {
		t.Errorf("orphan namespace not listed: %+v", list)
	}
	if err := d.Destroy(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, orphan)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan namespace left after Destroy: %v", err)
	}
}
