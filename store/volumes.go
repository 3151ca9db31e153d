package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/errdefs"
)

// Volumes (Cinder's Block Storage v3 subset): see protocol/volumes.go for
// the design and the messages to the hosts. These rows are the control
// plane's truth; the agents hold the data.

// VolumeStatus is a volume's status (Cinder's names). Every change goes
// through ChangeVolumeStatus, which applies only transitions allowed by
// volumeTransitions, guarded on the status the caller saw.
type VolumeStatus string

// Volume statuses.
const (
	VolumeCreating       VolumeStatus = "creating"
	VolumeAvailable      VolumeStatus = "available"
	VolumeAttaching      VolumeStatus = "attaching"
	VolumeInUse          VolumeStatus = "in-use"
	VolumeDetaching      VolumeStatus = "detaching"
	VolumeExtending      VolumeStatus = "extending"
	VolumeMaintenance    VolumeStatus = "maintenance" // its data moves between hosts
	VolumeDeleting       VolumeStatus = "deleting"
	VolumeError          VolumeStatus = "error"
	VolumeErrorDeleting  VolumeStatus = "error_deleting"
	VolumeErrorExtending VolumeStatus = "error_extending"
)

// volumeTransitions is the state machine: the statuses a volume may go to
// from each status. A deleted volume's row is gone (no "deleted" status).
var volumeTransitions = map[VolumeStatus][]VolumeStatus{
	VolumeCreating:  {VolumeAvailable, VolumeError},
	VolumeAvailable: {VolumeAttaching, VolumeExtending, VolumeDeleting, VolumeMaintenance},
	// a failed attach goes back to available
	VolumeAttaching: {VolumeInUse, VolumeAvailable, VolumeError},
	VolumeInUse:     {VolumeDetaching, VolumeExtending, VolumeMaintenance},
	// a refused (busy) or failed detach goes back to in-use
	VolumeDetaching: {VolumeAvailable, VolumeInUse, VolumeError},
	// extend ends where it started (available or in-use)
	VolumeExtending:      {VolumeAvailable, VolumeInUse, VolumeErrorExtending},
	VolumeMaintenance:    {VolumeAvailable, VolumeInUse, VolumeError},
	VolumeDeleting:       {VolumeErrorDeleting},
	VolumeError:          {VolumeDeleting},
	VolumeErrorDeleting:  {VolumeDeleting},
	VolumeErrorExtending: {VolumeDeleting, VolumeAvailable, VolumeInUse},
}

// CanBecome reports whether the state machine allows from -> to.
func (from VolumeStatus) CanBecome(to VolumeStatus) bool {
	return slices.Contains(volumeTransitions[from], to)
}

// Valid reports whether s is a known status.
func (s VolumeStatus) Valid() bool {
	_, ok := volumeTransitions[s]
	return ok
}

// ResettableVolumeStatuses are what an admin's os-reset_status may set
// (Cinder allows any status; these are the ones Capsule's flows know).
var ResettableVolumeStatuses = []VolumeStatus{
	VolumeAvailable, VolumeInUse, VolumeError, VolumeErrorDeleting, VolumeErrorExtending,
	VolumeCreating, VolumeAttaching, VolumeDetaching, VolumeExtending, VolumeDeleting, VolumeMaintenance,
}

// SnapshotStatus is a volume snapshot's status.
type SnapshotStatus string

// Snapshot statuses.
const (
	SnapshotCreating      SnapshotStatus = "creating"
	SnapshotAvailable     SnapshotStatus = "available"
	SnapshotDeleting      SnapshotStatus = "deleting"
	SnapshotError         SnapshotStatus = "error"
	SnapshotErrorDeleting SnapshotStatus = "error_deleting"
)

var snapshotTransitions = map[SnapshotStatus][]SnapshotStatus{
	SnapshotCreating:      {SnapshotAvailable, SnapshotError},
	SnapshotAvailable:     {SnapshotDeleting},
	SnapshotDeleting:      {SnapshotErrorDeleting},
	SnapshotError:         {SnapshotDeleting},
	SnapshotErrorDeleting: {SnapshotDeleting},
}

// CanBecome reports whether the snapshot state machine allows from -> to.
func (from SnapshotStatus) CanBecome(to SnapshotStatus) bool {
	return slices.Contains(snapshotTransitions[from], to)
}

// MaxVolumeSizeGB is the largest volume size, in GiB, a request may ask
// for: Cinder's and Nova's schema maximum (their database's 32-bit
// integer). Without it a size near the 64-bit limit was stored, and every
// later sum of a project's or a host's gigabytes overflowed (500s).
const MaxVolumeSizeGB = 1<<31 - 1

// Volume is a Cinder volume.
type Volume struct {
	ID               string `gorm:"primaryKey;size:64"`
	ProjectID        string `gorm:"size:64;index"`
	UserID           string `gorm:"size:64"`
	Name             string `gorm:"size:255"`
	Description      string
	SizeGB           int
	Status           VolumeStatus `gorm:"size:32;index"`
	VolumeType       string       `gorm:"size:255"`
	AvailabilityZone string       `gorm:"size:255"`
	// Backend is protocol.BackendLocal or protocol.BackendShared; Host is
	// the compute host that holds a local volume's data ("" until the
	// create is placed).
	Backend    string `gorm:"size:16"`
	Host       string `gorm:"size:255;index"`
	SnapshotID string `gorm:"size:64;index"` // created from this snapshot
	ImageID    string `gorm:"size:64"`       // pre-filled from this image
	Bootable   bool
	// ImageMetadata is the volume's image metadata (Cinder's
	// volume_image_metadata, os-set_image_metadata) as a JSON object,
	// shown beside image_id.
	ImageMetadata string
	Metadata      string // JSON object
	// ErrorMessage is why the last work on the volume failed (shown to
	// admins; Cinder keeps it in its user messages).
	ErrorMessage string
	CreatedAt    time.Time `gorm:"index"`
	UpdatedAt    time.Time
}

// VolumeSnapshot is a point-in-time copy of a volume, kept where the
// volume's data is (Host).
type VolumeSnapshot struct {
	ID           string `gorm:"primaryKey;size:64"`
	ProjectID    string `gorm:"size:64;index"`
	UserID       string `gorm:"size:64"`
	VolumeID     string `gorm:"size:64;index"`
	Name         string `gorm:"size:255"`
	Description  string
	SizeGB       int
	Status       SnapshotStatus `gorm:"size:32"`
	Backend      string         `gorm:"size:16"`
	Host         string         `gorm:"size:255;index"`
	Metadata     string         // JSON object
	ErrorMessage string
	CreatedAt    time.Time `gorm:"index"`
	UpdatedAt    time.Time
}

// VolumeAttachment attaches a volume to a server (at most one per volume:
// Capsule's volumes are not multiattach). Its ID is the attachment id Nova
// shows at 2.89 and Cinder in the volume's attachments.
type VolumeAttachment struct {
	ID         string `gorm:"primaryKey;size:64"`
	VolumeID   string `gorm:"size:64;uniqueIndex"`
	InstanceID string `gorm:"size:64;index"`
	// Host is the server's host when the volume was attached.
	Host string `gorm:"size:255"`
	// Device is the attachment's device as Nova shows it; MountPath is
	// where it is mounted inside the server (Device when it is a path
	// other than /dev/..., else /mnt/<volume id>).
	Device              string `gorm:"size:255"`
	MountPath           string `gorm:"size:255"`
	ReadOnly            bool
	Tag                 string `gorm:"size:60"`
	DeleteOnTermination bool
	// Status: "attaching", "attached" or "detaching" (the volume's own
	// status says the same from the volume's side).
	Status    string `gorm:"size:16"`
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Attachment statuses.
const (
	AttachmentAttaching = "attaching"
	AttachmentAttached  = "attached"
	AttachmentDetaching = "detaching"
)

// VolumeQuotaLimit is an operator-set Block Storage quota of a project
// (volumes, gigabytes, snapshots); without a row the configured default
// holds. -1 is unlimited.
type VolumeQuotaLimit struct {
	ProjectID string `gorm:"primaryKey;size:64"`
	Resource  string `gorm:"primaryKey;size:64"`
	HardLimit int
	UpdatedAt time.Time
}

// VolumeQuota is the quota lock scope of Block Storage resources.
const VolumeQuota = "volume"

// Block Storage quota resources (Cinder's names).
const (
	QuotaVolumes   = "volumes"
	QuotaGigabytes = "gigabytes"
	QuotaSnapshots = "snapshots"
	// QuotaPerVolumeGigabytes limits one volume's size (-1 unless set for
	// the project). Its delta in VolumeQuotaGuard is the size of the
	// largest volume the request makes or grows to, not a sum.
	QuotaPerVolumeGigabytes = "per_volume_gigabytes"
)

// ErrVolumeOverQuota is Cinder's OverQuota (413 VolumeSizeExceedsAvailableQuota
// / VolumeLimitExceeded are answered by the API as 413).
var ErrVolumeOverQuota = errdefs.Class{Kind: errdefs.ErrQuotaExceeded, Reason: "OverQuota"}

// ErrVolumeStatus is a request refused because of the volume's status
// (Cinder's InvalidVolume, 400).
var ErrVolumeStatus = errdefs.Class{Kind: errdefs.ErrInvalidArgument, Reason: "InvalidVolume"}

// VolumeQuotaLimitsIn returns a project's set Block Storage limits.
func VolumeQuotaLimitsIn(tx *gorm.DB, projectID string) (map[string]int, error) {
	var rows []VolumeQuotaLimit
	if err := tx.Where("project_id = ?", projectID).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("volume quota limits of project %s: %w", projectID, err)
	}
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		out[r.Resource] = r.HardLimit
	}
	return out, nil
}

// VolumeUsage is what a project holds: volumes, their gigabytes (with
// snapshots', as Cinder counts them) and snapshots.
func VolumeUsage(tx *gorm.DB, projectID string) (map[string]int, error) {
	var v struct {
		N  int64
		GB int64
	}
	if err := tx.Model(&Volume{}).Select("COUNT(*) AS n, COALESCE(SUM(size_gb), 0) AS gb").
		Where("project_id = ?", projectID).Scan(&v).Error; err != nil {
		return nil, fmt.Errorf("volume usage of project %s: %w", projectID, err)
	}
	var s struct {
		N  int64
		GB int64
	}
	if err := tx.Model(&VolumeSnapshot{}).Select("COUNT(*) AS n, COALESCE(SUM(size_gb), 0) AS gb").
		Where("project_id = ?", projectID).Scan(&s).Error; err != nil {
		return nil, fmt.Errorf("snapshot usage of project %s: %w", projectID, err)
	}
	return map[string]int{
		QuotaVolumes:   int(v.N),
		QuotaGigabytes: int(v.GB + s.GB),
		QuotaSnapshots: int(s.N),
	}, nil
}

// VolumeQuotaGuard checks, under the project's volume quota lock, that
// adding volumes/snapshots/gigabytes (the deltas, by resource) keeps the
// project within its limits (set rows, else defaults; < 0 unlimited).
func VolumeQuotaGuard(projectID string, deltas map[string]int, defaults map[string]int) Guard {
	return func(tx *gorm.DB) error {
		if err := LockQuota(tx, VolumeQuota, projectID); err != nil {
			return err
		}
		set, err := VolumeQuotaLimitsIn(tx, projectID)
		if err != nil {
			return err
		}
		if size := deltas[QuotaPerVolumeGigabytes]; size > 0 {
			limit, ok := set[QuotaPerVolumeGigabytes]
			if !ok {
				limit = -1
				if d, ok := defaults[QuotaPerVolumeGigabytes]; ok {
					limit = d
				}
			}
			if limit >= 0 && size > limit {
				return ErrVolumeOverQuota.Newf("VolumeSizeExceedsLimit: Requested volume size %dG is larger than maximum allowed limit %dG.", size, limit)
			}
		}
		used, err := VolumeUsage(tx, projectID)
		if err != nil {
			return err
		}
		for _, res := range []string{QuotaVolumes, QuotaSnapshots, QuotaGigabytes} {
			d := deltas[res]
			if d <= 0 {
				continue
			}
			limit, ok := set[res]
			if !ok {
				limit = defaults[res]
			}
			if limit < 0 {
				continue
			}
			if used[res]+d > limit {
				if res == QuotaGigabytes {
					return ErrVolumeOverQuota.Newf("VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested %dG, quota is %dG and %dG has been consumed.", d, limit, used[res])
				}
				return ErrVolumeOverQuota.Newf("Maximum number of %s allowed (%d) exceeded for quota '%s'.", res, limit, res)
			}
		}
		return nil
	}
}

// SetVolumeQuotaLimits sets a project's Block Storage limits.
func (s *Store) SetVolumeQuotaLimits(ctx context.Context, projectID string, limits map[string]int) error {
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for res, n := range limits {
			row := VolumeQuotaLimit{ProjectID: projectID, Resource: res, HardLimit: n, UpdatedAt: time.Now().UTC()}
			if err := tx.Save(&row).Error; err != nil {
				return fmt.Errorf("%s: %w", res, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set volume quota limits of project %s: %w", projectID, err)
	}
	return nil
}

// CreateVolume inserts v after guards (quota) pass, in one transaction.
func (s *Store) CreateVolume(ctx context.Context, v *Volume, guards ...Guard) error {
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := runGuards(tx, guards); err != nil {
			return err
		}
		return tx.Create(v).Error
	})
	if err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	return nil
}

// CreateVolumeSnapshot inserts sn after guards pass.
func (s *Store) CreateVolumeSnapshot(ctx context.Context, sn *VolumeSnapshot, guards ...Guard) error {
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := runGuards(tx, guards); err != nil {
			return err
		}
		return tx.Create(sn).Error
	})
	if err != nil {
		return fmt.Errorf("create volume snapshot: %w", err)
	}
	return nil
}

// ErrVolumeNotFound: no such volume (in the caller's scope).
var ErrVolumeNotFound = errdefs.Class{Kind: errdefs.ErrNotFound, Reason: "VolumeNotFound"}

// ErrSnapshotNotFound: no such volume snapshot.
var ErrSnapshotNotFound = errdefs.Class{Kind: errdefs.ErrNotFound, Reason: "SnapshotNotFound"}

// GetVolume returns volume id.
func GetVolume(tx *gorm.DB, id string) (*Volume, error) {
	var v Volume
	err := tx.Where("id = ?", id).Take(&v).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrVolumeNotFound.Newf("Volume %s could not be found.", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get volume %s: %w", id, err)
	}
	return &v, nil
}

// GetVolumeSnapshot returns snapshot id.
func GetVolumeSnapshot(tx *gorm.DB, id string) (*VolumeSnapshot, error) {
	var sn VolumeSnapshot
	err := tx.Where("id = ?", id).Take(&sn).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrSnapshotNotFound.Newf("Snapshot %s could not be found.", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get snapshot %s: %w", id, err)
	}
	return &sn, nil
}

// ChangeVolumeStatus moves volume id from one of from to to (which the
// state machine must allow from each of from), writing set too, and
// reports whether it did (false: the volume was not in any of from, or is
// gone).
func ChangeVolumeStatus(tx *gorm.DB, id string, from []VolumeStatus, to VolumeStatus, set map[string]any) (bool, error) {
	for _, f := range from {
		if !f.CanBecome(to) {
			return false, fmt.Errorf("volume %s: transition %s -> %s not allowed", id, f, to)
		}
	}
	return forceVolumeStatus(tx, id, from, to, set)
}

// ResetVolumeStatus is an admin's os-reset_status: to any known status,
// from whatever the volume is in.
func ResetVolumeStatus(tx *gorm.DB, id string, to VolumeStatus) (bool, error) {
	if !to.Valid() {
		return false, fmt.Errorf("reset volume %s: unknown status %q", id, to)
	}
	return forceVolumeStatus(tx, id, nil, to, nil)
}

func forceVolumeStatus(tx *gorm.DB, id string, from []VolumeStatus, to VolumeStatus, set map[string]any) (bool, error) {
	fields := make(map[string]any, len(set)+2)
	for k, v := range set {
		fields[k] = v
	}
	fields["status"] = to
	fields["updated_at"] = time.Now().UTC()
	q := tx.Model(&Volume{}).Where("id = ?", id)
	if from != nil {
		q = q.Where("status IN ?", from)
	}
	res := q.Updates(fields)
	if res.Error != nil {
		return false, fmt.Errorf("volume %s -> %s: %w", id, to, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// Valid reports whether s is a known snapshot status.
func (s SnapshotStatus) Valid() bool {
	_, ok := snapshotTransitions[s]
	return ok
}

// ChangeSnapshotStatus is ChangeVolumeStatus for snapshots.
func ChangeSnapshotStatus(tx *gorm.DB, id string, from []SnapshotStatus, to SnapshotStatus, set map[string]any) (bool, error) {
	for _, f := range from {
		if !f.CanBecome(to) {
			return false, fmt.Errorf("snapshot %s: transition %s -> %s not allowed", id, f, to)
		}
	}
	return ForceSnapshotStatus(tx, id, from, to, set)
}

// ForceSnapshotStatus is an admin's repair (os-reset_status,
// os-force_delete): snapshot id from one of from to any known status,
// past the state machine.
func ForceSnapshotStatus(tx *gorm.DB, id string, from []SnapshotStatus, to SnapshotStatus, set map[string]any) (bool, error) {
	if !to.Valid() {
		return false, fmt.Errorf("snapshot %s: unknown status %q", id, to)
	}
	fields := make(map[string]any, len(set)+2)
	for k, v := range set {
		fields[k] = v
	}
	fields["status"] = to
	fields["updated_at"] = time.Now().UTC()
	res := tx.Model(&VolumeSnapshot{}).Where("id = ? AND status IN ?", id, from).Updates(fields)
	if res.Error != nil {
		return false, fmt.Errorf("snapshot %s -> %s: %w", id, to, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// VolumeAttachments returns the attachments of the given volumes, by
// volume id.
func VolumeAttachments(tx *gorm.DB, volumeIDs []string) (map[string]VolumeAttachment, error) {
	out := make(map[string]VolumeAttachment, len(volumeIDs))
	if len(volumeIDs) == 0 {
		return out, nil
	}
	var rows []VolumeAttachment
	if err := tx.Where("volume_id IN ?", volumeIDs).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("volume attachments: %w", err)
	}
	for _, a := range rows {
		out[a.VolumeID] = a
	}
	return out, nil
}

// InstanceVolumeAttachments returns a server's attachments, oldest first.
func InstanceVolumeAttachments(tx *gorm.DB, instanceID string) ([]VolumeAttachment, error) {
	var rows []VolumeAttachment
	if err := tx.Where("instance_id = ?", instanceID).Order("created_at, id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("volume attachments of server %s: %w", instanceID, err)
	}
	return rows, nil
}
