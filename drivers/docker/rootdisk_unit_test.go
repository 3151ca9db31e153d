package docker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/drivers"
)

func TestRootDiskFromInfo(t *testing.T) {
	for _, c := range []struct {
		name   string
		driver string
		status [][2]string
		want   rootDiskState
	}{
		{"overlay2 on xfs: probe decides", "overlay2", [][2]string{{"Backing Filesystem", "xfs"}, {"Supports d_type", "true"}}, rootDiskUnknown},
		{"overlay2 on ext4", "overlay2", [][2]string{{"Backing Filesystem", "extfs"}}, rootDiskNotEnforced},
		{"overlay2, no backing fs said", "overlay2", nil, rootDiskNotEnforced},
		{"vfs", "vfs", [][2]string{{"Backing Filesystem", "xfs"}}, rootDiskNotEnforced},
		{"btrfs driver: probe decides (qgroups)", "btrfs", [][2]string{{"Build Version", "Btrfs v6.2"}}, rootDiskUnknown},
		{"overlay2 on btrfs", "overlay2", [][2]string{{"Backing Filesystem", "btrfs"}}, rootDiskNotEnforced},
	} {
		got, reason := rootDiskFromInfo(c.driver, c.status)
		if got != c.want {
			t.Errorf("%s: state %v, want %v", c.name, got, c.want)
		}
		if (got == rootDiskNotEnforced) != (reason != "") {
			t.Errorf("%s: reason %q for state %v", c.name, reason, got)
		}
	}
}

// fakeProbe is a dockerd's answer to the probe's create.
type fakeProbe struct {
	err   error
	calls int
	opt   map[string]string
}

func (f *fakeProbe) create(_ context.Context, opt map[string]string) error {
	f.calls++
	f.opt = opt
	return f.err
}

func TestRootDiskProbeDecidesStorageOpt(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// dockerd accepts storage-opt size: every create with a disk carries it.
	var ok rootDisk
	accept := &fakeProbe{}
	if err := ok.probe(ctx, log, accept.create); err != nil {
		t.Fatal(err)
	}
	if accept.opt["size"] == "" {
		t.Errorf("probe create carried %v, want a size", accept.opt)
	}
	if got := ok.storageOpt(20); got["size"] != "20G" || len(got) != 1 {
		t.Errorf("storageOpt(20) = %v, want size=20G", got)
	}
	if got := ok.storageOpt(0); got != nil {
		t.Errorf("storageOpt(0) = %v, want none (disk 0 is unlimited)", got)
	}
	if ok.report() != drivers.RootDiskEnforced {
		t.Errorf("report %q", ok.report())
	}
	if err := ok.probe(ctx, log, accept.create); err != nil || accept.calls != 1 {
		t.Errorf("second probe: err %v, %d creates, want the verdict kept (1 create)", err, accept.calls)
	}

	// dockerd refuses it (overlay2 on xfs without pquota): no caps, said.
	var no rootDisk
	refuse := &fakeProbe{err: errors.New("Error response from daemon: --storage-opt is supported only for overlay over xfs with 'pquota' mount option")}
	if err := no.probe(ctx, log, refuse.create); err != nil {
		t.Fatal(err)
	}
	if got := no.storageOpt(20); got != nil {
		t.Errorf("storageOpt on a host that cannot cap = %v, want none", got)
	}
	if r := no.report(); !strings.HasPrefix(r, drivers.RootDiskNotEnforced+": ") || !strings.Contains(r, "pquota") {
		t.Errorf("report %q, want not enforced with dockerd's reason", r)
	}
	if err := no.probe(ctx, log, refuse.create); err != nil || refuse.calls != 1 {
		t.Errorf("second probe: err %v, %d creates, want the verdict kept", err, refuse.calls)
	}

	// The btrfs driver refuses it when it cannot set the qgroup limit.
	var nobtrfs rootDisk
	refuseQgroup := &fakeProbe{err: errors.New("Error response from daemon: Failed to limit qgroup for &{}: operation not permitted")}
	if err := nobtrfs.probe(ctx, log, refuseQgroup.create); err != nil {
		t.Fatal(err)
	}
	if r := nobtrfs.report(); !strings.HasPrefix(r, drivers.RootDiskNotEnforced+": ") || !strings.Contains(r, "qgroup") || nobtrfs.storageOpt(1) != nil {
		t.Errorf("after a qgroup refusal: report %q, opt %v, want not enforced, no caps", r, nobtrfs.storageOpt(1))
	}

	// Another failure decides nothing: no caps yet, tried again next time.
	var flaky rootDisk
	down := &fakeProbe{err: errors.New("Cannot connect to the Docker daemon")}
	if err := flaky.probe(ctx, log, down.create); err == nil {
		t.Error("probe with dockerd down: no error")
	}
	if flaky.report() != drivers.RootDiskUnprobed || flaky.storageOpt(5) != nil {
		t.Errorf("after a failed probe: report %q, opt %v", flaky.report(), flaky.storageOpt(5))
	}
	down.err = nil
	if err := flaky.probe(ctx, log, down.create); err != nil || flaky.storageOpt(5)["size"] != "5G" {
		t.Errorf("retried probe: err %v, opt %v", err, flaky.storageOpt(5))
	}
}

// A remade container's cap: btrfs counts what the container references,
// so the flavor's disk as is; overlay2 counts only the writable layer, so
// the disk less the data the resize commits hold; data beyond the disk is
// refused, an uncapped flavor has none.
func TestRemadeStorageOpt(t *testing.T) {
	for _, c := range []struct {
		storage   string
		gb        int
		committed int64
		want      string
		err       bool
	}{
		{"btrfs", 2, 500 << 20, "2G", false},
		{"overlay2", 2, 500 << 20, strconv.FormatInt(2<<30-500<<20, 10), false},
		{"overlay2", 1, 1 << 30, "", true},
		{"btrfs", 0, 500 << 20, "", false},
	} {
		opt, err := remadeStorageOpt(c.storage, c.gb, c.committed)
		if (err != nil) != c.err || opt["size"] != c.want {
			t.Errorf("remadeStorageOpt(%s, %d, %d) = %v, %v; want size %q, error %v", c.storage, c.gb, c.committed, opt, err, c.want, c.err)
		}
	}
}

// The cap of a container: the label of a remade one, else its
// storage-opt in GB, else none.
func TestRootDiskGBOf(t *testing.T) {
	mk := func(labels, opt map[string]string) container.InspectResponse {
		return container.InspectResponse{Config: &container.Config{Labels: labels},
			ContainerJSONBase: &container.ContainerJSONBase{HostConfig: &container.HostConfig{StorageOpt: opt}}}
	}
	for _, c := range []struct {
		c    container.InspectResponse
		want int
	}{
		{mk(nil, map[string]string{"size": "1G"}), 1},
		{mk(map[string]string{LabelRootDiskGB: "2"}, map[string]string{"size": "1610612736"}), 2},
		{mk(map[string]string{LabelRootDiskGB: ""}, map[string]string{"size": "3G"}), 3},
		{mk(nil, nil), 0},
	} {
		if got := rootDiskGBOf(c.c); got != c.want {
			t.Errorf("rootDiskGBOf(%v, %v) = %d, want %d", c.c.Config.Labels, c.c.HostConfig.StorageOpt, got, c.want)
		}
	}
	if !isKept(container.Summary{Names: []string{"/capsule-x.pre-resize"}}) || isKept(container.Summary{Names: []string{"/capsule-x"}}) {
		t.Errorf("isKept does not tell a kept container by its name")
	}
}
