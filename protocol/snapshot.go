package protocol

import "time"

// Snapshot message kinds: the API casts KindSnapshotInstance to the
// server's compute.<host> queue; the agent answers with a SnapshotReport
// on the conductor queue.
const (
	KindSnapshotInstance = "snapshot_instance"
	KindSnapshotReport   = "snapshot_report"
)

// SnapshotInstance asks an agent to commit an instance's container and
// push it to Ref (<registry>/capsule/snapshots/<image id>:<image id>), the registry
// reference the image row ImageID will point at.
type SnapshotInstance struct {
	RequestID  string `json:"request_id"`
	InstanceID string `json:"instance_id"`
	ImageID    string `json:"image_id"`
	Ref        string `json:"ref"`
	// Backup is set for a createBackup; the agent hands it back in its
	// report untouched.
	Backup *BackupRotation `json:"backup,omitempty"`
	// Shelve is set for a shelve: the agent stops the server (and unplugs
	// it) before the commit, and reports the power state it left.
	Shelve bool `json:"shelve,omitempty"`
}

// BackupRotation says which backups the conductor prunes once a backup is
// active: those of the instance with image property backup_type Type,
// all but the newest Rotation (0: all, the new one too, as Nova does).
// It rides on the messages rather than on the image row because Glance
// has no attribute for it and an image property would show it to users;
// backup_type is on the image anyway (Nova's property).
type BackupRotation struct {
	Type     string `json:"type"`
	Rotation int    `json:"rotation"`
}

// SnapshotReport is the outcome of a SnapshotInstance: on success the
// digest and compressed size of what was pushed.
type SnapshotReport struct {
	RequestID  string `json:"request_id"`
	InstanceID string `json:"instance_id"`
	ImageID    string `json:"image_id"`
	Host       string `json:"host"`
	Ref        string `json:"ref"`
	// Backup echoes the request's (nil for createImage).
	Backup *BackupRotation `json:"backup,omitempty"`
	// Shelve echoes the request's; PowerState is then the server's power
	// state after the shelve (lifecycle.PowerState), also on failure.
	Shelve     bool   `json:"shelve,omitempty"`
	PowerState int    `json:"power_state,omitempty"`
	OK         bool   `json:"ok"`
	Error      string `json:"error,omitempty"`
	// ErrorMessage is the failure's safe message, as InstanceReport's.
	ErrorMessage string    `json:"error_message,omitempty"`
	Digest       string    `json:"digest,omitempty"`
	Size         int64     `json:"size,omitempty"`
	Event        string    `json:"event"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished"`
}
