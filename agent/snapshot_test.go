package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/protocol"
)

func (e *env) snapshotReports() []protocol.SnapshotReport {
	e.cond.mu.Lock()
	defer e.cond.mu.Unlock()
	return append([]protocol.SnapshotReport(nil), e.cond.snaps...)
}

func (e *env) waitSnapshot(n int) protocol.SnapshotReport {
	e.t.Helper()
	waitFor(e.t, 5*time.Second, "snapshot report", func() bool { return len(e.snapshotReports()) >= n })
	return e.snapshotReports()[n-1]
}

func TestSnapshotCommitsThroughTheDriverAndReports(t *testing.T) {
	e, drv := startFake(t)
	e.build("i-s", "req-1", fakeImage)
	if r := e.waitReport("i-s", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	ref := "127.0.0.1:5050/capsule/snapshots:img-1"
	e.publish(protocol.KindSnapshotInstance, protocol.SnapshotInstance{RequestID: "req-2", InstanceID: "i-s", ImageID: "img-1", Ref: ref})
	r := e.waitSnapshot(1)
	if !r.OK || r.ImageID != "img-1" || r.Ref != ref || r.Host != testHost || r.Event != EventSnapshot ||
		!strings.HasPrefix(r.Digest, "sha256:") || r.Size <= 0 || r.RequestID != "req-2" {
		t.Fatalf("snapshot report %+v", r)
	}
	if got, _ := drv.get("i-s"); got.Power != drivers.PowerRunning {
		t.Errorf("instance power after snapshot %v, want running", got.Power)
	}

	// A driver failure is reported with its error, not retried.
	drv.setFail("snapshot", "i-s", errors.New("registry unreachable"))
	e.publish(protocol.KindSnapshotInstance, protocol.SnapshotInstance{RequestID: "req-3", InstanceID: "i-s", ImageID: "img-2", Ref: ref})
	if r := e.waitSnapshot(2); r.OK || !strings.Contains(r.Error, "registry unreachable") || r.ImageID != "img-2" {
		t.Fatalf("failed snapshot report %+v", r)
	}
	// A missing instance fails cleanly.
	e.publish(protocol.KindSnapshotInstance, protocol.SnapshotInstance{RequestID: "req-4", InstanceID: "i-missing", ImageID: "img-3", Ref: ref})
	if r := e.waitSnapshot(3); r.OK || r.ImageID != "img-3" {
		t.Fatalf("snapshot of a missing instance %+v", r)
	}
}
