package instance

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Evacuate: a server whose host is down is rebuilt on another host from
// its image, with its ports, MACs, fixed addresses, flavor, key, user
// data, metadata and shared volumes (Nova's evacuate).
//
//	active|stopped|error --evacuate (rebuilding: on its dead host, waiting for a host)-->
//	    --placed (rebuild_spawning: on the chosen host, which builds it)--> active|stopped
//
// Its migration record (type evacuation) goes accepted → pre-migrating
// (placed) → done (built) → completed (the dead host came back and
// removed what was left of it there). No host for it: it stays as it was
// on its dead host with a fault, migration error. The build failed on
// the chosen host: ERROR on its dead host again (the chosen host's room
// given back), migration failed; another evacuate may be tried.
//
// Local volumes live on the dead host and cannot be reached: a server
// with one is refused up front (EvacuateBlockers).

// MigrationEvacuation is the migration_type of an evacuation.
const MigrationEvacuation = "evacuation"

// Evacuation migration statuses (Nova's).
const (
	EvacAccepted  lifecycle.MigrationStatus = "accepted"
	EvacPlaced    lifecycle.MigrationStatus = "pre-migrating"
	EvacDone      lifecycle.MigrationStatus = "done"
	EvacCompleted lifecycle.MigrationStatus = "completed"
	EvacFailed    lifecycle.MigrationStatus = "failed"
	EvacError     lifecycle.MigrationStatus = "error"
)

// EvacuateBlockers refuses the evacuation of instance id from host when
// a volume it needs lives only there: its local volumes (its boot volume
// among them) are on the dead host's disk. The Conflict names them.
func EvacuateBlockers(tx *gorm.DB, id, host string) error {
	vols, err := LocalVolumesOn(tx, id, host)
	if err != nil || len(vols) == 0 {
		return err
	}
	what, verb, it := "local volume", "lives", "it"
	if len(vols) > 1 {
		what, verb, it = "local volumes", "live", "them"
	}
	msg := fmt.Sprintf("Cannot 'evacuate' instance %s: its %s %s %s on host %s, which is down, and cannot be moved from it "+
		"(only volumes on the shared backend move with an evacuation). Detach %s, or bring %s back.",
		id, what, strings.Join(vols, ", "), verb, host, it, host)
	var root []string
	if err := tx.Model(&store.VolumeAttachment{}).Where("instance_id = ? AND volume_id IN ? AND mount_path = ?", id, vols, protocol.RootMountPath).
		Pluck("volume_id", &root).Error; err != nil {
		return fmt.Errorf("boot volume of %s: %w", id, err)
	}
	if len(root) > 0 {
		msg = fmt.Sprintf("Cannot 'evacuate' instance %s: its boot volume %s is a local volume on host %s, which is down, "+
			"and cannot be moved from it (only volumes on the shared backend move with an evacuation).", id, root[0], host)
	}
	return errdefs.Conflict(msg)
}

// BeginEvacuate starts the evacuation of inst from its (dead) host: task
// rebuilding while a host is chosen, set written with it (the new
// adminPass hash), and the migration record m (type evacuation,
// accepted) created, its source_vm_state what the server ends as:
// stopped when it was stopped or stopped is set (Nova's 2.95), else
// active (an errored server comes back active, as Nova's rebuild). The
// lifecycle rules and the state inst was read in guard it as Begin's do.
func BeginEvacuate(tx *gorm.DB, inst *store.Instance, m *store.Migration, stopped bool, at time.Time, set map[string]any) error {
	if _, err := Begin(tx, inst, lifecycle.ActEvacuate, at, set); err != nil {
		return err
	}
	if m.UUID == "" {
		m.UUID = uuid.NewString()
	}
	m.InstanceID, m.MigrationType, m.Status = inst.ID, MigrationEvacuation, EvacAccepted
	m.SourceCompute, m.SourceNode, m.SourceVMState = inst.Host, inst.Host, lifecycle.Active
	if stopped || inst.VMState == lifecycle.Stopped {
		m.SourceVMState = lifecycle.Stopped
	}
	m.OldFlavorID, m.NewFlavorID = inst.FlavorRowID, inst.FlavorRowID
	m.CreatedAt, m.UpdatedAt = at, at
	if err := tx.Create(m).Error; err != nil {
		return fmt.Errorf("record evacuation of %s: %w", inst.ID, err)
	}
	return nil
}

// Evacuation returns instance id's evacuation in progress (accepted or
// placed), nil when it has none.
func Evacuation(tx *gorm.DB, id string) (*store.Migration, error) {
	var m store.Migration
	err := tx.Where("instance_id = ? AND migration_type = ? AND status IN ?", id, MigrationEvacuation,
		[]lifecycle.MigrationStatus{EvacAccepted, EvacPlaced}).Order("id DESC").Limit(1).Find(&m).Error
	if err != nil {
		return nil, fmt.Errorf("evacuation of %s: %w", id, err)
	}
	if m.ID == 0 {
		return nil, nil
	}
	return &m, nil
}

// evacuating guards an evacuation waiting for a host on its dead host.
func evacuating(source string) Guard {
	return Guard{VM: []lifecycle.VMState{lifecycle.Active, lifecycle.Stopped, lifecycle.Error},
		Task: []lifecycle.TaskState{lifecycle.Rebuilding}, Host: source}
}

// spawning guards an evacuation placed on host.
func spawning(host string) Guard {
	return Guard{VM: []lifecycle.VMState{lifecycle.Active, lifecycle.Stopped, lifecycle.Error},
		Task: []lifecycle.TaskState{lifecycle.RebuildSpawning}, Host: host}
}

// PlaceEvacuation records host (in zone) as where evacuation m of
// instance id rebuilds it: task rebuild_spawning there, the claim on its
// dead host dropped (the scheduler's claim on host is its room now), its
// ports bound to host and its (shared) volumes' attachments with it;
// the migration is pre-migrating to host. False when the instance no
// longer waits for a host on m's source.
func PlaceEvacuation(tx *gorm.DB, id string, m *store.Migration, host, zone string, at time.Time) (bool, error) {
	placed := false
	err := tx.Transaction(func(tx *gorm.DB) error {
		ok, err := Apply(tx, id, evacuating(m.SourceCompute),
			Change{Task: lifecycle.RebuildSpawning, Set: map[string]any{"host": host, "availability_zone": zone}, At: at})
		if err != nil || !ok {
			return err
		}
		placed = true
		if err := tx.Where("instance_id = ? AND host <> ?", id, host).Delete(&store.Claim{}).Error; err != nil {
			return fmt.Errorf("drop the claims of %s elsewhere: %w", id, err)
		}
		if err := tx.Model(&store.VolumeAttachment{}).Where("instance_id = ?", id).Update("host", host).Error; err != nil {
			return fmt.Errorf("attachments of %s to %s: %w", id, host, err)
		}
		if err := tx.Model(&store.Migration{}).Where("id = ?", m.ID).Updates(map[string]any{"status": EvacPlaced,
			"dest_compute": host, "dest_host": host, "dest_node": host, "updated_at": at}).Error; err != nil {
			return fmt.Errorf("evacuation %d of %s placed: %w", m.ID, id, err)
		}
		return BindPorts(tx, id, host)
	})
	return placed, err
}

// UnplaceEvacuation takes back a PlaceEvacuation whose build could not be sent: the
// instance waits for a host on its dead host again.
func UnplaceEvacuation(tx *gorm.DB, id string, m *store.Migration, host string, at time.Time) error {
	return tx.Transaction(func(tx *gorm.DB) error {
		ok, err := Apply(tx, id, spawning(host), Change{Task: lifecycle.Rebuilding, Set: map[string]any{"host": m.SourceCompute}, At: at})
		if err != nil || !ok {
			return err
		}
		if err := tx.Model(&store.VolumeAttachment{}).Where("instance_id = ?", id).Update("host", m.SourceCompute).Error; err != nil {
			return fmt.Errorf("attachments of %s back to %s: %w", id, m.SourceCompute, err)
		}
		if err := AdvanceMigration(tx, m.ID, EvacPlaced, EvacAccepted); err != nil {
			return err
		}
		return BindPorts(tx, id, m.SourceCompute)
	})
}

// EvacuationUnplaced ends evacuation m no host can take: the instance
// stays as it was on its dead host, with fault (why); the migration is
// error.
func EvacuationUnplaced(tx *gorm.DB, id string, m *store.Migration, fault Fault) (bool, error) {
	done := false
	err := tx.Transaction(func(tx *gorm.DB) error {
		ok, err := Apply(tx, id, evacuating(m.SourceCompute), Change{Task: lifecycle.NoTask, Fault: &fault, At: fault.At})
		if err != nil || !ok {
			return err
		}
		done = true
		return endEvacuation(tx, m.ID, EvacError, fault)
	})
	return done, err
}

// Evacuated records that host rebuilt evacuated instance id: active, or
// stopped when host left it so (power), launched now; the migration is
// done (completed once the dead host removed what is left of it there).
func Evacuated(tx *gorm.DB, id, host string, power lifecycle.PowerState, at time.Time) (bool, error) {
	done := false
	err := tx.Transaction(func(tx *gorm.DB) error {
		ok, err := Apply(tx, id, spawning(host), Change{VM: lifecycle.RebuildOutcome(power), Task: lifecycle.NoTask,
			ClearFault: true, At: at, Set: map[string]any{"power_state": int(power), "launched_at": at}})
		if err != nil || !ok {
			return err
		}
		done = true
		m, err := Evacuation(tx, id)
		if err != nil || m == nil {
			return err
		}
		return tx.Model(&store.Migration{}).Where("id = ?", m.ID).Updates(map[string]any{"status": EvacDone, "updated_at": at}).Error
	})
	return done, err
}

// EvacuationFailed ends an evacuation whose build failed on host: the
// instance is in ERROR with fault back on its dead host (host's room
// given back, its ports and volumes bound there again), so another
// evacuate may be tried; the migration is failed.
func EvacuationFailed(tx *gorm.DB, id, host string, fault Fault) (bool, error) {
	done := false
	err := tx.Transaction(func(tx *gorm.DB) error {
		m, err := Evacuation(tx, id)
		if err != nil || m == nil {
			return err
		}
		ok, err := Apply(tx, id, spawning(host), Change{VM: lifecycle.Error, Task: lifecycle.NoTask, Fault: &fault, At: fault.At,
			Set: map[string]any{"host": m.SourceCompute, "power_state": int(lifecycle.NoState)}})
		if err != nil || !ok {
			return err
		}
		done = true
		if err := ReleaseClaims(tx, id, host); err != nil {
			return err
		}
		if err := tx.Model(&store.VolumeAttachment{}).Where("instance_id = ?", id).Update("host", m.SourceCompute).Error; err != nil {
			return fmt.Errorf("attachments of %s back to %s: %w", id, m.SourceCompute, err)
		}
		if err := BindPorts(tx, id, m.SourceCompute); err != nil {
			return err
		}
		return endEvacuation(tx, m.ID, EvacFailed, fault)
	})
	return done, err
}

// endEvacuation sets evacuation mid's final status and why.
func endEvacuation(tx *gorm.DB, mid uint, status lifecycle.MigrationStatus, fault Fault) error {
	err := tx.Model(&store.Migration{}).Where("id = ?", mid).
		Updates(map[string]any{"status": status, "error_message": fault.Message, "updated_at": fault.At}).Error
	if err != nil {
		return fmt.Errorf("end evacuation %d: %w", mid, err)
	}
	return nil
}

// EvacuatedFrom lists the instances evacuated from host (rebuilt
// elsewhere, migration done) whose leftovers there are not yet removed.
func EvacuatedFrom(tx *gorm.DB, host string) ([]string, error) {
	var ids []string
	err := tx.Model(&store.Migration{}).Where("migration_type = ? AND source_compute = ? AND status = ?", MigrationEvacuation, host, EvacDone).
		Distinct().Order("instance_id").Pluck("instance_id", &ids).Error
	if err != nil {
		return nil, fmt.Errorf("instances evacuated from %s: %w", host, err)
	}
	return ids, nil
}

// EvacuationCleaned completes the evacuations of instances ids from host:
// host removed what was left of them there.
func EvacuationCleaned(tx *gorm.DB, host string, ids []string, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	err := tx.Model(&store.Migration{}).Where("migration_type = ? AND source_compute = ? AND status = ? AND instance_id IN ?",
		MigrationEvacuation, host, EvacDone, ids).Updates(map[string]any{"status": EvacCompleted, "updated_at": at}).Error
	if err != nil {
		return fmt.Errorf("complete evacuations from %s: %w", host, err)
	}
	return nil
}
