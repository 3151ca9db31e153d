package protocol

import (
	"strconv"
	"strings"
	"time"
)

// Persistent volumes (Cinder's Block Storage v3 subset, issue 17).
//
// Design. A volume is a size-limited filesystem that outlives servers: on
// the "local" backend a sparse ext4 image file on one compute host (the
// volume's Host), loop-mounted there; on the "shared" backend the same
// kind of image on the shared export (NFS) every host mounts at the same
// path, so any host can mount it (Host is then only where it was made).
// The agent of a host (package volume) owns the files and the mounts; the
// control plane (the Block Storage API, the Compute API's
// os-volume_attachments, the conductor) owns the rows (store.Volume,
// store.VolumeSnapshot, store.VolumeAttachment) and their statuses (the
// state machine in store/volumes.go).
//
// Flow. Every piece of volume work is one message to the compute.<host>
// queue of the host that holds the data (for a shared volume: any host
// up, the API picks the attached server's host or a live one). The agent
// does the work idempotently (work redelivered after it was done succeeds
// again without doing it twice) and answers with one VolumeReport, both
// as the reply when the message came as a Call and published on the
// conductor queue (KindVolumeReport); the conductor applies the report
// with guarded status transitions, so a report seen twice changes nothing
// the second time. Failures carry Error (whole chain, for logs/admins),
// ErrorMessage (errdefs.Message, safe to show the user) and ErrorKind
// (errdefs kind: "conflict" for a busy mount on detach, "not_found" when
// the thing is not on the host, "quota_exceeded" for a full disk).
//
// Mounts inside servers. An attached volume is mounted into the running
// server's mount namespace at MountPath (the attachment's device when it
// is a path, else /mnt/<volume id>) without restarting it. Every
// InstanceSpec carries its attached volumes (InstanceSpec.Volumes), so a
// build, a start after a host reboot, a migration import, an unshelve, a
// rebuild and the agent's reconcile (re)mount them from the spec alone.
//
// Moving data. A local volume attached to a server on another host moves
// there first: the conductor asks the volume's host for KindVolumeExport
// (push the image file to Ref in the private registry) and the server's
// host for KindVolumeImport (pull Ref into a new image file of the
// volume's size); afterwards the volume's Host is the server's and the
// old host is sent KindVolumeDelete. A server cold-migrated or resized to
// another host takes its local volumes along inside the migration's own
// steps (MigrationWork.VolumeRefs, DropVolumes; package migrate's
// volumes.go). Shared volumes are simply mounted where the server runs.
// A shelved server keeps its volumes attached (in-use, as Nova's); its
// offload pushes each local volume to the registry
// (InstanceAction.VolumeRefs, <registry>/capsule/volumes/<id>:shelved)
// before the host removes the server and deletes its copy, so while
// offloaded the volume lives on no host (Host ""), its data only in the
// registry; the unshelve's host pulls them (BuildInstance.VolumeRefs)
// before it creates the server, and they live there once it runs (their
// tags deleted). A failed unshelve deletes the copies it pulled; a server
// deleted while offloaded has them pulled back onto the host it was
// shelved on (instance/shelve.go, instance/volumes.go). Evacuation
// refuses a server with a local volume (its data is on the dead host) and
// re-mounts shared ones on the new host (instance/evacuate.go).
const (
	// compute.<host> queues (work; answered with a VolumeReport)
	KindVolumeCreate   = "volume_create" // VolumeCreate
	KindVolumeDelete   = "volume_delete" // VolumeDelete: deleting what is not there succeeds
	KindVolumeExtend   = "volume_extend" // VolumeExtend: grow the image and the filesystem (online when mounted)
	KindVolumeAttach   = "volume_attach" // VolumeAttach: mount into a server (live when it runs)
	KindVolumeDetach   = "volume_detach" // VolumeDetach: unmount from a server; busy -> ErrorKind conflict
	KindSnapshotCreate = "volume_snapshot_create"
	KindSnapshotDelete = "volume_snapshot_delete"
	KindVolumeExport   = "volume_export" // source host: push the volume's data to Ref
	KindVolumeImport   = "volume_import" // target host: pull Ref into the volume's image here

	// conductor queue
	KindVolumeReport = "volume_report" // VolumeReport (also the reply of every work message)
	// KindVolumesOnHost is request/reply (VolumesOnHostRequest in,
	// VolumesOnHostReply out): what the control plane expects on a host,
	// for the agent's reconcile after a restart.
	KindVolumesOnHost = "volumes_on_host"
)

// Volume backends.
const (
	BackendLocal  = "local"  // image file on the volume's Host only
	BackendShared = "shared" // image file on the shared export every host mounts
)

// VolumeSpec is a volume as an agent needs it: agents have no database.
type VolumeSpec struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	SizeGB    int    `json:"size_gb"` // the filesystem's size limit (writes past it: ENOSPC)
	Backend   string `json:"backend"` // BackendLocal | BackendShared
	Host      string `json:"host"`    // where a local volume's data lives
}

// VolumeCreate asks for a new volume (an empty ext4 filesystem of SizeGB)
// on the receiving host; at most one of the sources is set.
type VolumeCreate struct {
	RequestID string     `json:"request_id"`
	Volume    VolumeSpec `json:"volume"`
	// SnapshotID: fill it with a copy of snapshot SnapshotID (of a volume
	// on the same host, or on the shared export).
	SnapshotID string `json:"snapshot_id,omitempty"`
	// ImageRef: fill it with the filesystem of this image (registry
	// reference), as a server built from it would see its root.
	ImageRef string `json:"image_ref,omitempty"`
	// Deadline is when the sender stops waiting; work picked up after it
	// is skipped (reported as failed, nothing left behind).
	Deadline time.Time `json:"deadline,omitzero"`
}

// VolumeDelete asks for a volume's data to be removed (unmounted from the
// host first). Snapshots are separate files and are not touched.
type VolumeDelete struct {
	RequestID string     `json:"request_id"`
	Volume    VolumeSpec `json:"volume"`
}

// VolumeExtend grows a volume to Volume.SizeGB (from OldSizeGB); a mounted
// volume is grown online, so InstanceID (when attached) is informative.
type VolumeExtend struct {
	RequestID  string     `json:"request_id"`
	Volume     VolumeSpec `json:"volume"`
	OldSizeGB  int        `json:"old_size_gb"`
	InstanceID string     `json:"instance_id,omitempty"`
}

// VolumeMount is one attached volume of a server: where and how it is
// mounted inside. It rides in InstanceSpec.Volumes and in VolumeAttach.
type VolumeMount struct {
	AttachmentID string     `json:"attachment_id"`
	Volume       VolumeSpec `json:"volume"`
	MountPath    string     `json:"mount_path"` // absolute path inside the server; RootMountPath: the root
	ReadOnly     bool       `json:"read_only,omitempty"`
	// Create, set in a build's spec for a volume the server's create asked
	// for (a block-device mapping) that does not exist yet: the building
	// host makes it (from the image, the snapshot or blank) before the
	// server is created, so it is local to the server's host.
	Create *VolumeSource `json:"create,omitempty"`
}

// RootMountPath is a boot volume's MountPath: the server's root
// filesystem lives on the volume (boot from volume). Its top-level
// directories are bind-mounted over the image's when the workload is
// created (drivers/docker), so it is never mounted live.
const RootMountPath = "/"

// Root reports whether m is the server's boot volume.
func (m VolumeMount) Root() bool { return m.MountPath == RootMountPath }

// Ephemeral disks (block-device mappings blank -> local, or the flavor's
// ephemeral size) are local volumes owned by their server: no volume row,
// not in the Block Storage API; the spec carries them as VolumeMounts
// with EphemeralID ids and EphemeralMountPath paths, Create blank (a
// build, or a start on a host without them, makes them empty); they move
// with a cold migration as local volumes do and go with the server.

// EphemeralID is the volume id of server instanceID's ephemeral disk i.
func EphemeralID(instanceID string, i int) string { return instanceID + "-eph" + strconv.Itoa(i) }

// EphemeralMountPath is where ephemeral disk i is mounted in its server.
func EphemeralMountPath(i int) string { return "/mnt/ephemeral" + strconv.Itoa(i) }

// EphemeralOf reports whether volume id is one of server instanceID's
// ephemeral disks.
func EphemeralOf(id, instanceID string) bool { return strings.HasPrefix(id, instanceID+"-eph") }

// EphemeralServer returns the server whose ephemeral disk volume id is
// (EphemeralID's form: <server>-eph<digits>); ok is false for any other
// volume id.
func EphemeralServer(id string) (server string, ok bool) {
	i := strings.LastIndex(id, "-eph")
	if i <= 0 || i+4 == len(id) {
		return "", false
	}
	for _, c := range id[i+4:] {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return id[:i], true
}

// Ephemeral reports whether m is an ephemeral disk.
func (m VolumeMount) Ephemeral() bool {
	return m.AttachmentID == "" && strings.HasPrefix(m.MountPath, "/mnt/ephemeral")
}

// VolumeSource is what a volume made during a build is filled with: the
// filesystem of image ImageRef, a copy of snapshot SnapshotID (on the
// same host), or nothing (blank).
type VolumeSource struct {
	ImageRef   string `json:"image_ref,omitempty"`
	SnapshotID string `json:"snapshot_id,omitempty"`
}

// VolumeAttach asks for a volume to be mounted into server InstanceID on
// the receiving host: live into its mount namespace when it runs (same
// PID 1), else remembered for its next start (InstanceSpec.Volumes has it
// too by then).
type VolumeAttach struct {
	RequestID  string      `json:"request_id"`
	InstanceID string      `json:"instance_id"`
	Mount      VolumeMount `json:"mount"`
	Deadline   time.Time   `json:"deadline,omitzero"`
}

// VolumeDetach asks for a volume to be unmounted from server InstanceID.
// A busy mount (open files, a process's cwd) is refused with ErrorKind
// "conflict" unless Force (server delete: the server is going away).
type VolumeDetach struct {
	RequestID  string      `json:"request_id"`
	InstanceID string      `json:"instance_id"`
	Mount      VolumeMount `json:"mount"`
	Force      bool        `json:"force,omitempty"`
	Deadline   time.Time   `json:"deadline,omitzero"`
}

// SnapshotCreate asks for a point-in-time copy of a volume (a reflink or
// sparse copy of its image next to it; the copy is not mounted anywhere).
// Snapshotting an in-use volume copies what is on disk (Cinder's force).
type SnapshotCreate struct {
	RequestID  string     `json:"request_id"`
	SnapshotID string     `json:"snapshot_id"`
	Volume     VolumeSpec `json:"volume"`
}

// SnapshotDelete asks for a snapshot's copy to be removed; a missing one
// is gone already (success).
type SnapshotDelete struct {
	RequestID  string     `json:"request_id"`
	SnapshotID string     `json:"snapshot_id"`
	Volume     VolumeSpec `json:"volume"`
}

// VolumeTransfer moves a local volume's data between hosts through the
// registry: KindVolumeExport (to the source: push the unmounted volume's
// data to Ref) then KindVolumeImport (to the target: pull Ref into a new
// image of Volume.SizeGB; Volume.Host is already the target). Ref is
// <registry>/capsule/volumes/<volume id>:<request id>; the conductor
// deletes the tag once the import is done.
type VolumeTransfer struct {
	RequestID string     `json:"request_id"`
	Volume    VolumeSpec `json:"volume"`
	Ref       string     `json:"ref"`
	Deadline  time.Time  `json:"deadline,omitzero"`
}

// VolumeReport is the outcome of one piece of volume work: the reply of a
// Call and a message on the conductor queue.
type VolumeReport struct {
	RequestID    string `json:"request_id"`
	Kind         string `json:"kind"` // the work's message kind
	VolumeID     string `json:"volume_id"`
	SnapshotID   string `json:"snapshot_id,omitempty"`
	AttachmentID string `json:"attachment_id,omitempty"`
	InstanceID   string `json:"instance_id,omitempty"`
	Host         string `json:"host"`
	OK           bool   `json:"ok"`
	Error        string `json:"error,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`
	ErrorKind    string `json:"error_kind,omitempty"`
	// SizeGB is the volume's size after the work (create, extend, import).
	SizeGB int `json:"size_gb,omitempty"`
	// Bytes: export/import, bytes pushed/pulled; snapshot: bytes used.
	Bytes int64 `json:"bytes,omitempty"`
	// Ref (export, import): the work's registry reference, echoed.
	Ref string `json:"ref,omitempty"`
	// Live (attach/detach): the running server's mounts changed now
	// (false: the server is stopped; applied at its next start).
	Live     bool      `json:"live,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
}

// VolumesOnHostRequest asks the conductor which volumes and snapshots it
// places on Host (local ones; shared volumes are listed where attached).
type VolumesOnHostRequest struct {
	Host string `json:"host"`
}

// VolumesOnHostReply lists them; the attachments of the host's servers
// come with InstancesOnHost (InstanceSpec.Volumes). An agent never deletes
// data it finds that is not listed: it logs it (an operator decides).
type VolumesOnHostReply struct {
	Volumes   []VolumeSpec `json:"volumes"`
	Snapshots []string     `json:"snapshots"` // snapshot ids on this host
}
