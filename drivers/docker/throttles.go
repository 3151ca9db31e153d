package docker

import (
	"context"
	"sync"

	"github.com/capsule-cloud/capsule/cgroup"
)

// liveThrottles are the disk IO throttles a live resize wrote to running
// containers, by container ID. Docker's record of a container keeps the
// throttles of its create and applies them again at every start, so
// Start and Reboot write these back after starting it. They live in
// memory only: after an agent restart the reconcile's limits repair
// (agent.repairLimits) restores a server's flavor throttles. Keyed by
// container, a rebuilt or migrated server (a new container, created with
// its flavor's throttles) never gets stale ones.
type liveThrottles struct {
	mu   sync.Mutex
	byID map[string][]cgroup.DiskThrottle
}

func (l *liveThrottles) set(cid string, ts []cgroup.DiskThrottle) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byID == nil {
		l.byID = map[string][]cgroup.DiskThrottle{}
	}
	l.byID[cid] = ts
}

func (l *liveThrottles) get(cid string) ([]cgroup.DiskThrottle, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts, ok := l.byID[cid]
	return ts, ok
}

func (l *liveThrottles) forget(cid string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.byID, cid)
}

// restoreThrottles writes back the throttles a live resize gave
// container cid of instance id, after a (re)start applied Docker's
// record. A failure is logged, not returned: the server runs, and the
// next reconcile re-applies its flavor's limits.
func (d *Driver) restoreThrottles(ctx context.Context, id, cid string) {
	ts, ok := d.live.get(cid)
	if !ok {
		return
	}
	c, err := d.cli.ContainerInspect(ctx, cid)
	if err == nil && c.State != nil && c.State.Pid > 0 {
		err = cgroup.SetDiskThrottles(c.State.Pid, ts)
	}
	if err != nil {
		d.log.Warn("could not restore the disk throttles of a live resize after a start; the reconcile will", "instance", id, "container", cid, "err", err)
		return
	}
	d.log.Info("disk throttles of a live resize restored after a start", "instance", id, "container", cid, "disk_throttles", ts)
}
