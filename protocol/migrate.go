package protocol

import "time"

// Cold-migration message kinds (package migrate drives them from the
// conductor). Work goes to compute.<host> queues; every piece of work is
// answered with one MigrationReport on the conductor queue.
const (
	// compute.<source>: stop the instance, unplug its NICs, refuse data
	// in Docker volumes, commit its container and push it to Ref, push
	// its local volumes (VolumeRefs).
	KindMigrationExport = "migration_export"
	// compute.<target>: pull Ref, create the instance from it with the
	// same UUID, NICs (same ports, bound here now) and limits, start it
	// when Start.
	KindMigrationImport = "migration_import"
	// compute.<host>: destroy the instance's container and plumbing on
	// this host (the source after a confirm, the target after a revert or
	// a failure). Destroying what is not there succeeds.
	KindMigrationCleanup = "migration_cleanup"
	// compute.<source>: bring the stopped source back: plumb its NICs,
	// start it when Start (revert, or a failed migration's rollback).
	KindMigrationRestore = "migration_restore"
	// compute.<source>: the pre-copy, while the instance still runs:
	// commit its container (not paused: only a warm-up, the export's
	// final pass is what counts) and push it to PreRef, remembering what
	// its writable layer held so the export then pushes only what
	// changed since.
	KindMigrationPrecopy = "migration_precopy"
	// compute.<target>: pull PreRef ahead of the export, so the import
	// then fetches only the export's last layer.
	KindMigrationPrepull = "migration_prepull"

	// conductor queue
	KindMigrationReport   = "migration_report"
	KindMigrationProgress = "migration_progress" // best effort, throttled by the agent
	KindMigrationCheck    = "migration_check"    // request/reply
)

// MigrationWork is the body of every compute-queue migration message.
// Step is the migrate.Step the work belongs to; the report echoes it, so
// the conductor ignores a report of a step the migration has left.
type MigrationWork struct {
	RequestID     string `json:"request_id"`
	MigrationID   uint   `json:"migration_id"`
	MigrationUUID string `json:"migration_uuid"`
	InstanceID    string `json:"instance_id"`
	Step          string `json:"step"`
	// Ref is the registry reference of the migration's commit
	// (<registry>/capsule/migrations:<migration uuid>): export pushes to
	// it, import boots from it.
	Ref string `json:"ref,omitempty"`
	// PreRef is the pre-copy's reference (<Ref>-pre), set when the
	// migration has one: the pre-copy pushes it, the pre-pull pulls it,
	// the export pushes only a layer over it, imports and cleanups untag
	// it.
	PreRef string `json:"pre_ref,omitempty"`
	// Spec is the instance as it must run on the receiving host (import,
	// restore): flavor (the new one for a resize), NICs bound to that
	// host, ImageRef = Ref for an import.
	Spec InstanceSpec `json:"spec,omitempty"`
	// Start says the instance ran before the migration and must run
	// after it (import, restore).
	Start bool `json:"start,omitempty"`
	// Deadline is when the conductor stops waiting for this step; work
	// picked up after it is skipped (the conductor rolled back).
	Deadline time.Time `json:"deadline,omitempty"`
	// VolumeRefs (export, import): the server's local volumes that move
	// with it, volume id -> registry reference of their data
	// (<registry>/capsule/volumes/<volume>:<migration uuid>). The source
	// pushes each (the server is stopped: the data is consistent), the
	// target pulls each into a fresh copy before the server starts there
	// (Spec.Volumes mounts them).
	VolumeRefs map[string]string `json:"volume_refs,omitempty"`
	// DropVolumes (cleanup): local volumes whose copy on the receiving
	// host the migration made obsolete (the source's after a confirm, the
	// target's after a revert or a failure): unmounted and deleted here.
	// The control plane keeps the volume on the other host.
	DropVolumes []string `json:"drop_volumes,omitempty"`
}

// MigrationReport is an agent's outcome of one MigrationWork.
type MigrationReport struct {
	RequestID   string `json:"request_id"`
	MigrationID uint   `json:"migration_id"`
	InstanceID  string `json:"instance_id"`
	Host        string `json:"host"`
	Kind        string `json:"kind"` // the work's message kind
	Step        string `json:"step"`
	OK          bool   `json:"ok"`
	Error       string `json:"error,omitempty"`
	// ErrorMessage is the failure's safe message, as InstanceReport's.
	ErrorMessage string    `json:"error_message,omitempty"`
	Digest       string    `json:"digest,omitempty"` // export: manifest digest pushed
	Bytes        int64     `json:"bytes,omitempty"`  // export: compressed bytes pushed; import: bytes pulled
	PowerState   int       `json:"power_state"`
	Event        string    `json:"event"` // instance-action event name (Nova's)
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished"`
	Skipped      bool      `json:"skipped,omitempty"` // the conductor said the step was over (MigrationCheck)
}

// MigrationProgress tells the conductor how far a push or pull got.
type MigrationProgress struct {
	MigrationID uint   `json:"migration_id"`
	Host        string `json:"host"`
	Step        string `json:"step"`
	Bytes       int64  `json:"bytes"`
}

// MigrationCheck asks the conductor whether migration MigrationID still
// waits for Step from Host; an agent asks before it creates or starts
// anything, so work redelivered after a rollback does nothing.
type MigrationCheck struct {
	MigrationID uint   `json:"migration_id"`
	Host        string `json:"host"`
	Step        string `json:"step"`
}

// MigrationCheckReply answers a MigrationCheck.
type MigrationCheckReply struct {
	Proceed bool   `json:"proceed"`
	Reason  string `json:"reason,omitempty"`
}
