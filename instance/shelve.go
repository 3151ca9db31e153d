package instance

import (
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
)

// Shelve: the transitions of a shelve, its offload and its unshelve.
//
//	active|stopped|paused|suspended --shelve (shelving: stop, commit, push)--> shelved
//	shelved --offload (shelving_offloading: container, sandbox, claims freed)--> shelved_offloaded
//	shelved --unshelve (unshelving: start on its host)--> active
//	shelved_offloaded --unshelve (unshelving: schedule; spawning: pull, create, start)--> active
//
// A failed shelve leaves the server stopped (or as it was, when it could
// not even be stopped) with a fault; a failed unshelve of an offloaded
// server leaves it shelved_offloaded, on no host, with a fault (Nova's
// reverts_task_state); a failed offload leaves it shelved on its host.
//
// Local volumes stay attached (in-use) through a shelve, as Nova's do.
// The offload pushes each one's data to the registry
// (ShelvedVolumeRef) before the host deletes its copy: while offloaded a
// local volume lives on no host (Volume.Host "", its attachment's host
// ""), its data only in the registry. The unshelve's host pulls them
// before the server is created; once it runs there they live on that
// host (Unshelved) and the conductor deletes the tags. A failed unshelve
// leaves them in the registry for the next one.

// Shelved records that the host pushed the shelve image of an instance
// shelving on host: it is shelved (stopped, on its host, its room still
// held) with imageID as its shelve image.
func Shelved(tx *gorm.DB, id, host, imageID string, at time.Time) (bool, error) {
	return Apply(tx, id, During(lifecycle.Shelving).OnHost(host), Change{VM: lifecycle.Shelved, Task: lifecycle.NoTask,
		At: at, Set: map[string]any{"power_state": int(lifecycle.Shutdown), "shelved_image_id": imageID,
			"shelved_at": at, "shelved_host": host}})
}

// ShelveFailed ends a shelve that failed on host: the server is stopped
// when its host stopped it (power), else in vm (the state it was shelved
// from), with fault.
func ShelveFailed(tx *gorm.DB, id, host string, vm lifecycle.VMState, power lifecycle.PowerState, fault Fault) (bool, error) {
	if power != lifecycle.Running && power != lifecycle.PausedPS {
		vm = lifecycle.Stopped
	}
	return Apply(tx, id, During(lifecycle.Shelving).OnHost(host), Change{VM: vm, Task: lifecycle.NoTask, Fault: &fault,
		At: fault.At, Set: map[string]any{"power_state": int(lifecycle.RecordedPower(vm, power))}})
}

// BeginOffload starts the offload of a shelved instance on host (task
// shelving_offloading), whoever asks (the API's shelveOffload, the
// conductor once shelved_offload_time passed).
func BeginOffload(tx *gorm.DB, id, host string, at time.Time) (bool, error) {
	return Apply(tx, id, In(lifecycle.Shelved, lifecycle.NoTask).OnHost(host),
		Change{Task: lifecycle.ShelvingOffloading, At: at})
}

// Offloaded records that host removed an offloading instance's container
// and sandbox: it is shelved_offloaded on no host, its claims there
// released and its ports unbound (they and their addresses stay its own).
func Offloaded(tx *gorm.DB, id, host string, at time.Time) (bool, error) {
	done := false
	err := tx.Transaction(func(tx *gorm.DB) error {
		ok, err := Apply(tx, id, In(lifecycle.Shelved, lifecycle.ShelvingOffloading).OnHost(host),
			Change{VM: lifecycle.ShelvedOffloaded, Task: lifecycle.NoTask, At: at,
				Set: map[string]any{"host": "", "power_state": int(lifecycle.NoState)}})
		if err != nil || !ok {
			return err
		}
		done = true
		if err := ReleaseClaims(tx, id, host); err != nil {
			return err
		}
		if err := moveShelvedVolumes(tx, id, host, ""); err != nil {
			return err
		}
		return UnbindPorts(tx, id)
	})
	return done, err
}

// ShelvedVolumeRef is where the offload of a shelved server pushes its
// local volume volumeID: in the registry of its shelve image
// (shelveImageRef), capsule/volumes/<volume>:shelved. A volume is
// attached to one server, so the tag is the volume's own.
func ShelvedVolumeRef(shelveImageRef, volumeID string) (string, error) {
	r, err := registry.ParseRef(shelveImageRef)
	if err != nil {
		return "", fmt.Errorf("shelved volume %s: %w", volumeID, err)
	}
	return registry.Ref{Host: r.Host, Repo: "capsule/volumes/" + volumeID, Tag: "shelved"}.String(), nil
}

// LocalVolumesOn lists the local volumes attached to instance id whose
// data is on host ("": an offloaded server's, in the registry), sorted.
func LocalVolumesOn(tx *gorm.DB, id, host string) ([]string, error) {
	var ids []string
	err := tx.Model(&store.Volume{}).Joins("JOIN volume_attachments ON volume_attachments.volume_id = volumes.id").
		Where("volume_attachments.instance_id = ? AND volumes.backend = ? AND volumes.host = ?", id, protocol.BackendLocal, host).
		Order("volumes.id").Pluck("volumes.id", &ids).Error
	if err != nil {
		return nil, fmt.Errorf("local volumes of instance %s on host %q: %w", id, host, err)
	}
	return ids, nil
}

// ShelvedVolumeRefs maps the local volumes of instance id on host to
// their ShelvedVolumeRef (nil when there are none): what an offload
// pushes (host: the server's) and an unshelve pulls (host "").
func ShelvedVolumeRefs(tx *gorm.DB, id, host, shelveImageRef string) (map[string]string, error) {
	ids, err := LocalVolumesOn(tx, id, host)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	refs := make(map[string]string, len(ids))
	for _, v := range ids {
		if refs[v], err = ShelvedVolumeRef(shelveImageRef, v); err != nil {
			return nil, err
		}
	}
	return refs, nil
}

// OffloadVolumeRefs is where the offload of instance id pushes its local
// volumes on host: next to its shelve image (ShelvedVolumeRef).
// Without a shelve image there is nowhere to name: the offload fails
// (it stays shelved, its volumes untouched).
//
// A volume attached or detached while the server is shelved (from 2.20)
// must have settled first (a 409 otherwise): callers call it after
// BeginOffload, which holds the server's row against LockShelved.
func OffloadVolumeRefs(tx *gorm.DB, id, host string) (map[string]string, error) {
	if vol, err := VolumeBusy(tx, id); err != nil || vol != "" {
		if err == nil {
			err = errdefs.Conflictf("Cannot 'shelveOffload' instance %s while volume %s is being attached to or detached from it; try again once it settled.", id, vol)
		}
		return nil, err
	}
	vols, err := LocalVolumesOn(tx, id, host)
	if err != nil || len(vols) == 0 {
		return nil, err
	}
	var inst store.Instance
	if err := tx.Where("id = ?", id).Take(&inst).Error; err != nil {
		return nil, store.NotFound(err, "instance "+id)
	}
	img, err := ShelveImage(tx, &inst)
	if err != nil {
		return nil, err
	}
	if img == nil || img.RegistryRef == "" {
		return nil, errdefs.Conflictf("Cannot offload instance %s: its shelve image %s is gone, so its local volumes have nowhere to go.", id, inst.ShelvedImageID)
	}
	return ShelvedVolumeRefs(tx, id, host, img.RegistryRef)
}

// moveShelvedVolumes records that the local volumes of instance id on
// host from now live on host to ("": in the registry), and the server's
// attachments with them.
func moveShelvedVolumes(tx *gorm.DB, id, from, to string) error {
	ids, err := LocalVolumesOn(tx, id, from)
	if err != nil {
		return err
	}
	if len(ids) > 0 {
		if err := tx.Model(&store.Volume{}).Where("id IN ? AND host = ?", ids, from).Update("host", to).Error; err != nil {
			return fmt.Errorf("volumes of instance %s to host %q: %w", id, to, err)
		}
	}
	if err := tx.Model(&store.VolumeAttachment{}).Where("instance_id = ?", id).Update("host", to).Error; err != nil {
		return fmt.Errorf("attachments of instance %s to host %q: %w", id, to, err)
	}
	return nil
}

// ParkedVolumeRef is where a local volume attached to offloaded server
// inst goes until its unshelve, as if it had been attached when the
// server was offloaded: ShelvedVolumeRef next to its shelve image. A
// server whose shelve image is gone has nowhere to keep it (409).
func ParkedVolumeRef(tx *gorm.DB, inst *store.Instance, volumeID string) (string, error) {
	img, err := ShelveImage(tx, inst)
	if err != nil {
		return "", err
	}
	if img == nil || img.RegistryRef == "" {
		return "", errdefs.Conflictf("Cannot attach a local volume to instance %s: its shelve image %s is gone, so the volume's data has nowhere to wait for the unshelve.", inst.ID, inst.ShelvedImageID)
	}
	return ShelvedVolumeRef(img.RegistryRef, volumeID)
}

// LockShelved locks instance id's row until tx ends and checks that it
// is still in vm (shelved or shelved_offloaded) with no task (op names
// the caller's action in the 409 otherwise): a volume attached or
// detached in tx cannot then race the server's unshelve or offload,
// which update that row first and look at the attachments after
// (VolumeAttaching, VolumeBusy).
func LockShelved(tx *gorm.DB, id string, vm lifecycle.VMState, op string) error {
	var inst store.Instance
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Select("id", "vm_state", "task_state").
		Where("id = ? AND deleted_at IS NULL", id).Take(&inst).Error
	if err != nil {
		return store.NotFound(err, "instance "+id)
	}
	if inst.VMState != vm || inst.TaskState != lifecycle.NoTask {
		return errdefs.Conflictf("Cannot '%s' instance %s while it is in vm_state %s", op, id, inst.VMState)
	}
	return nil
}

// VolumeBusy returns a volume whose attach to or detach from instance id
// is still under way ("" when none is): a shelved server is not
// offloaded before its volumes settled (the offload moves the attached
// ones to the registry and the server off its host, which an attach or
// detach in flight would miss).
func VolumeBusy(tx *gorm.DB, id string) (string, error) {
	var vols []string
	err := tx.Model(&store.VolumeAttachment{}).Where("instance_id = ? AND status IN ?", id,
		[]string{store.AttachmentAttaching, store.AttachmentDetaching}).
		Order("volume_id").Limit(1).Pluck("volume_id", &vols).Error
	if err != nil {
		return "", fmt.Errorf("attachments of instance %s: %w", id, err)
	}
	if len(vols) == 0 {
		return "", nil
	}
	return vols[0], nil
}

// VolumeAttaching returns a volume whose attach to instance id is still
// under way ("" when none is): an offloaded server is not unshelved
// before its volumes settled (a local one moves to the registry first).
func VolumeAttaching(tx *gorm.DB, id string) (string, error) {
	var vols []string
	err := tx.Model(&store.VolumeAttachment{}).Where("instance_id = ? AND status = ?", id, store.AttachmentAttaching).
		Order("volume_id").Limit(1).Pluck("volume_id", &vols).Error
	if err != nil {
		return "", fmt.Errorf("attachments of instance %s: %w", id, err)
	}
	if len(vols) == 0 {
		return "", nil
	}
	return vols[0], nil
}

// OffloadFailed ends an offload that failed on host: the server stays
// shelved there, with fault.
func OffloadFailed(tx *gorm.DB, id, host string, fault Fault) (bool, error) {
	return Apply(tx, id, In(lifecycle.Shelved, lifecycle.ShelvingOffloading).OnHost(host),
		Change{Task: lifecycle.NoTask, Fault: &fault, At: fault.At})
}

// PlaceUnshelve records host (in zone) as where an offloaded instance
// waiting to be unshelved spawns (task spawning), drops any claim it
// holds elsewhere and binds its ports to host; false when it no longer
// waits.
func PlaceUnshelve(tx *gorm.DB, id, host, zone string, at time.Time) (bool, error) {
	placed := false
	err := tx.Transaction(func(tx *gorm.DB) error {
		ok, err := Apply(tx, id, In(lifecycle.ShelvedOffloaded, lifecycle.Unshelving),
			Change{Task: lifecycle.Spawning, Set: map[string]any{"host": host, "availability_zone": zone}, At: at})
		if err != nil || !ok {
			return err
		}
		placed = true
		if err := tx.Where("instance_id = ? AND host <> ?", id, host).Delete(&store.Claim{}).Error; err != nil {
			return fmt.Errorf("drop stale claims of %s: %w", id, err)
		}
		return BindPorts(tx, id, host)
	})
	return placed, err
}

// Unshelved records that host runs the unshelved instance again (started
// where it was shelved, or spawned from its shelve image): active, its
// shelve image forgotten (the caller deletes it).
//
// An offloaded server's local volumes (in the registry) live on host
// from now: it pulled them before the server started.
func Unshelved(tx *gorm.DB, id, host string, power lifecycle.PowerState, at time.Time) (bool, error) {
	g := Guard{VM: []lifecycle.VMState{lifecycle.Shelved, lifecycle.ShelvedOffloaded},
		Task: []lifecycle.TaskState{lifecycle.Unshelving, lifecycle.Spawning}, Host: host}
	done := false
	err := tx.Transaction(func(tx *gorm.DB) error {
		ok, err := Apply(tx, id, g, Change{VM: lifecycle.Active, Task: lifecycle.NoTask, ClearFault: true, At: at,
			Set: map[string]any{"power_state": int(power), "launched_at": at, "shelved_image_id": "", "shelved_at": nil,
				"shelved_host": ""}})
		if err != nil || !ok {
			return err
		}
		done = true
		return moveShelvedVolumes(tx, id, "", host)
	})
	return done, err
}

// UnshelveFailed ends an unshelve that failed on host. A shelved server
// stays shelved there; an offloaded one goes back to no host, its claim
// there released and its ports unbound. Both keep their shelve image
// (another unshelve may succeed) and get fault.
func UnshelveFailed(tx *gorm.DB, id, host string, fault Fault) (bool, error) {
	done := false
	err := tx.Transaction(func(tx *gorm.DB) error {
		ok, err := Apply(tx, id, In(lifecycle.Shelved, lifecycle.Unshelving).OnHost(host),
			Change{Task: lifecycle.NoTask, Fault: &fault, At: fault.At})
		if err != nil {
			return err
		}
		if ok {
			done = true
			return nil
		}
		ok, err = Apply(tx, id, In(lifecycle.ShelvedOffloaded, lifecycle.Spawning).OnHost(host),
			Change{Task: lifecycle.NoTask, Fault: &fault, At: fault.At,
				Set: map[string]any{"host": "", "power_state": int(lifecycle.NoState)}})
		if err != nil || !ok {
			return err
		}
		done = true
		if err := ReleaseClaims(tx, id, host); err != nil {
			return err
		}
		return UnbindPorts(tx, id)
	})
	return done, err
}

// UnshelveUnplaced ends the unshelve of an offloaded instance no host
// can take (or whose shelve image is gone): it stays offloaded, with
// fault.
func UnshelveUnplaced(tx *gorm.DB, id string, fault Fault) (bool, error) {
	return Apply(tx, id, In(lifecycle.ShelvedOffloaded, lifecycle.Unshelving),
		Change{Task: lifecycle.NoTask, Fault: &fault, At: fault.At})
}

// UnbindPorts clears the binding host of the instance's ports (Neutron's
// binding:host_id) and marks them down: an offloaded server runs nowhere
// but keeps its ports, MACs and fixed IPs.
func UnbindPorts(tx *gorm.DB, id string) error {
	err := tx.Model(&store.Port{}).Where("device_id = ? AND compute_bound = ? AND project_id IN (?)", id, true,
		tx.Model(&store.Instance{}).Select("project_id").Where("id = ?", id)).
		Updates(map[string]any{"binding_host_id": "", "status": store.PortDown}).Error
	if err != nil {
		return fmt.Errorf("unbind ports of %s: %w", id, err)
	}
	return nil
}

// ShelveImageName is the name of a server's shelve image (Nova's).
func ShelveImageName(server string) string { return server + "-shelved" }

// ShelveImage returns inst's shelve image: the image row its
// shelved_image_id names, if it is still there and still the image of
// this server (instance_uuid); nil otherwise.
func ShelveImage(tx *gorm.DB, inst *store.Instance) (*store.Image, error) {
	if inst.ShelvedImageID == "" {
		return nil, nil
	}
	var img store.Image
	if err := tx.Where("id = ?", inst.ShelvedImageID).Limit(1).Find(&img).Error; err != nil {
		return nil, fmt.Errorf("shelve image %s of %s: %w", inst.ShelvedImageID, inst.ID, err)
	}
	if img.ID == "" {
		return nil, nil
	}
	props := map[string]string{}
	if json.Unmarshal([]byte(img.Properties), &props) != nil || props["instance_uuid"] != inst.ID {
		return nil, nil
	}
	return &img, nil
}

// DropShelveImage deletes inst's shelve image row (see ShelveImage) and
// returns it, for its caller to remove its registry tag once committed;
// nil when there is none.
func DropShelveImage(tx *gorm.DB, inst *store.Instance) (*store.Image, error) {
	img, err := ShelveImage(tx, inst)
	if err != nil || img == nil {
		return nil, err
	}
	if err := tx.Where("id = ?", img.ID).Delete(&store.Image{}).Error; err != nil {
		return nil, fmt.Errorf("delete shelve image %s of %s: %w", img.ID, inst.ID, err)
	}
	return img, nil
}
