package instance

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/store"
)

// Place records host (in zone) as where a building instance waiting for a
// host runs, drops any claim it still holds elsewhere (left by an earlier
// attempt that died mid-way) and binds its ports to host, in one
// transaction. It reports false when the instance no longer waits.
func Place(tx *gorm.DB, id, host, zone string, at time.Time) (bool, error) {
	placed := false
	err := tx.Transaction(func(tx *gorm.DB) error {
		ok, err := Apply(tx, id, In(lifecycle.Building, lifecycle.Scheduling),
			Change{Task: lifecycle.Spawning, Set: map[string]any{"host": host, "availability_zone": zone}, At: at})
		if err != nil || !ok {
			return err
		}
		placed = true
		if err := tx.Where("instance_id = ? AND host <> ?", id, host).Delete(&store.Claim{}).Error; err != nil {
			return fmt.Errorf("drop stale claims of %s: %w", id, err)
		}
		if err := placeVolumes(tx, id, host); err != nil {
			return err
		}
		// Neutron's binding:host_id, in the same transaction.
		return BindPorts(tx, id, host)
	})
	return placed, err
}

// Launched records that the build of a placed instance succeeded: it
// is active, running with power, launched at at.
func Launched(tx *gorm.DB, id string, power lifecycle.PowerState, at time.Time) (bool, error) {
	return Apply(tx, id, In(lifecycle.Building, lifecycle.Spawning), Change{VM: lifecycle.Active, Task: lifecycle.NoTask,
		Set: map[string]any{"power_state": int(power), "launched_at": at}, At: at})
}

// Unplace takes back a Place whose build could not be sent: the instance
// waits for a host again, in its zone as it was before (zone).
func Unplace(tx *gorm.DB, id, host, zone string, at time.Time) error {
	_, err := Apply(tx, id, In(lifecycle.Building, lifecycle.Spawning).OnHost(host),
		Change{Task: lifecycle.Scheduling, Set: map[string]any{"host": "", "availability_zone": zone}, At: at})
	return err
}

// FailScheduling puts a building instance that no host can take into
// ERROR with fault and releases every claim it holds; false when it was
// no longer waiting for a host.
func FailScheduling(tx *gorm.DB, id string, fault Fault) (bool, error) {
	failed := false
	err := tx.Transaction(func(tx *gorm.DB) error {
		ok, err := Fail(tx, id, In(lifecycle.Building, lifecycle.Scheduling), fault, nil, fault.At)
		if err != nil || !ok {
			return err
		}
		failed = true
		var out outbox.Batch // sent by the conductor's outbox relay
		if err := releaseBuildVolumes(tx, id, &out); err != nil {
			return err
		}
		return ReleaseClaims(tx, id, "")
	})
	return failed, err
}

// BuildFailure is a build that failed on Host: the hosts tried so far
// (Host included) and the attempt that failed.
type BuildFailure struct {
	Host    string
	Tried   []string
	Attempt int
}

// BuildFailed records a failed build and gives the host's room back, in
// one transaction guarded on the build still running there, so a report
// that lost a race with a delete or a reschedule frees nothing. With
// fault nil the instance waits for another host (a reschedule, attempt
// Attempt+1); else it goes to ERROR with fault. It reports whether it
// applied.
func BuildFailed(tx *gorm.DB, id string, f BuildFailure, fault *Fault, at time.Time) (bool, error) {
	applied := false
	err := tx.Transaction(func(tx *gorm.DB) error {
		tried := strings.Join(f.Tried, ",")
		g := In(lifecycle.Building, lifecycle.Spawning).OnHost(f.Host)
		c := Change{Task: lifecycle.Scheduling, At: at,
			Set: map[string]any{"host": "", "tried_hosts": tried, "build_attempts": f.Attempt + 1}}
		if fault != nil {
			c = Change{VM: lifecycle.Error, Task: lifecycle.NoTask, Fault: fault, At: at,
				Set: map[string]any{"power_state": 0, "tried_hosts": tried}}
		}
		ok, err := Apply(tx, id, g, c)
		if err != nil || !ok {
			return err
		}
		applied = true
		var out outbox.Batch // sent by the conductor's outbox relay
		if fault != nil {
			err = releaseBuildVolumes(tx, id, &out)
		} else {
			err = unplaceVolumes(tx, id, f.Host, &out)
		}
		if err != nil {
			return err
		}
		return ReleaseClaims(tx, id, f.Host)
	})
	return applied, err
}

// MarkDeleted soft-deletes an instance and releases every claim and port
// it holds; the server leaves its group. The conductor calls it when a
// host reports the delete done, the API for an instance that never
// reached a host.
func MarkDeleted(ctx context.Context, st *store.Store, id string, now time.Time) error {
	// Ports first (idempotent): if marking the instance fails, the retry
	// finds them already released; the other way round they could leak.
	var inst store.Instance
	if err := st.WithContext(ctx).Where("id = ?", id).First(&inst).Error; err != nil {
		return store.NotFound(err, "instance "+id)
	}
	if err := st.ReleaseInstancePorts(ctx, &inst); err != nil {
		return err
	}
	return st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := ReleaseClaims(tx, id, ""); err != nil {
			return err
		}
		// A deleted server leaves its group (frees the member quota, and
		// no longer constrains where the others go).
		if err := store.RemoveGroupMember(tx, id); err != nil {
			return err
		}
		// Its volumes are detached (and delete_on_termination ones
		// deleted), never left attached to a deleted server.
		if err := releaseVolumes(tx, &inst); err != nil {
			return err
		}
		_, err := Apply(tx, id, Guard{}, Change{VM: lifecycle.Deleted, Task: lifecycle.NoTask, At: now,
			Set: map[string]any{"power_state": 0, "deleted_at": now, "terminated_at": now}})
		if err != nil {
			return fmt.Errorf("mark %s deleted: %w", id, err)
		}
		return nil
	})
}
