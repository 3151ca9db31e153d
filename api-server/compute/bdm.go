package compute

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Block-device mappings on create (block_device_mapping_v2), as Nova
// takes them, on Capsule's volumes (instance/bdm.go has the life of the
// volumes they make):
//   - the image as the local root disk (boot_index 0, image -> local):
//     what every server has;
//   - destination_type=volume from source blank, image, snapshot (a new
//     volume, made by the server's host during the build, so it is local
//     to the server) or volume (the user's, available): attached before
//     the server starts, at device_name (else the next /dev/vdX) with
//     tag and delete_on_termination;
//   - one of them with boot_index 0 boots the server from the volume:
//     its root filesystem is the volume's (drivers/docker bootvolume.go),
//     the server shows image "" as Nova's volume-backed servers do.
//   - destination_type=local from source blank: an ephemeral disk (ext4,
//     volume_size GB, else the flavor's ephemeral size; together at most
//     the flavor's, Nova's rule), mounted at /mnt/ephemeral<i>
//     (protocol.EphemeralID; instance/volumes.go). Swap disks
//     (guest_format=swap) are refused with 400: a container has no swap
//     device of its own.

// bdmIn is one mapping as sent.
type bdmIn struct {
	SourceType          string          `json:"source_type"`
	DestinationType     string          `json:"destination_type"`
	UUID                string          `json:"uuid"`
	BootIndex           json.RawMessage `json:"boot_index"`
	VolumeSize          json.RawMessage `json:"volume_size"`
	DeleteOnTermination any             `json:"delete_on_termination"`
	DeviceName          string          `json:"device_name"`
	Tag                 string          `json:"tag"`
	VolumeType          *string         `json:"volume_type"`
	NoDevice            any             `json:"no_device"`
	GuestFormat         string          `json:"guest_format"`
}

// bdmPlan is one volume mapping checked: what the create makes or takes.
type bdmPlan struct {
	boot        bool
	source      string // blank | image | snapshot | volume
	volume      *store.Volume
	image       *store.Image
	snapshot    *store.VolumeSnapshot
	sizeGB      int
	device, tag string
	dot         bool
}

// bootIndexOf reads a boot_index (a number, a numeric string, null or
// absent: none, -1).
func bootIndexOf(raw json.RawMessage) (int, error) {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	if s == "" || s == "null" || s == "None" {
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errdefs.InvalidArgumentf("Invalid input for field/attribute boot_index. Value: %s.", s)
	}
	return n, nil
}

func sizeOf(raw json.RawMessage) (int, error) {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	if s == "" || s == "null" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, errdefs.InvalidArgumentf("Invalid input for field/attribute volume_size. Value: %s.", s)
	}
	if n > store.MaxVolumeSizeGB {
		return 0, errdefs.InvalidArgumentf("Invalid input for field/attribute volume_size. Value: %s. %d is greater than the maximum of %d", s, n, store.MaxVolumeSizeGB)
	}
	return n, nil
}

func invalidBDM(format string, a ...any) error {
	return errdefs.InvalidArgument("Block Device Mapping is Invalid: " + fmt.Sprintf(format, a...))
}

// planBDMs checks a create's mappings for project: the image as local root
// (imageID) is accepted as is; the volume mappings come back as plans,
// with the host they bind the server to ("" when none: a local volume or
// snapshot that exists lives on one host, the server must go there).
// baseImage is the image a boot from a snapshot runs when the snapshot's
// volume is gone (a snapshot image's base_image_ref).
// The ephemeral disks asked for (blank -> local) are appended to ephs,
// their size 0 when the mapping gave none (the flavor's: ephemeralDisks).
func (s *Service) planBDMs(ctx context.Context, bdms []json.RawMessage, imageID, project string, flavorRootGB int, baseImage string, ephs *[]store.EphemeralDisk) ([]bdmPlan, string, error) {
	var plans []bdmPlan
	host := ""
	bind := func(h string) error {
		if h == "" || h == host {
			return nil
		}
		if host != "" {
			return invalidBDM("the volumes and snapshots named live on different hosts (%s, %s); a server's local volumes must be on its host.", host, h)
		}
		host = h
		return nil
	}
	db := s.st.WithContext(ctx)
	boots := 0
	for _, raw := range bdms {
		var b bdmIn
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, "", errdefs.InvalidArgumentf("Invalid input for field/attribute block_device_mapping_v2: %v", err)
		}
		idx, err := bootIndexOf(b.BootIndex)
		if err != nil {
			return nil, "", err
		}
		size, err := sizeOf(b.VolumeSize)
		if err != nil {
			return nil, "", err
		}
		if idx == 0 {
			boots++
		}
		dest := b.DestinationType
		if dest == "" {
			dest = "local"
			if b.SourceType == "volume" || b.SourceType == "snapshot" {
				dest = "volume"
			}
		}
		if dest == "local" {
			if b.SourceType == "image" && idx == 0 && (b.UUID == "" || b.UUID == imageID) {
				continue // the image's local disk, as without mappings
			}
			if b.SourceType == "blank" {
				d, err := ephemeralOf(b, idx, size)
				if err != nil {
					return nil, "", err
				}
				*ephs = append(*ephs, d)
				continue
			}
			return nil, "", errdefs.InvalidArgumentf("Block device mapping (source_type=%s, destination_type=local) is not supported: a Capsule server's local disks are its image's root and blank ephemeral disks; use a volume (destination_type=volume).", b.SourceType)
		}
		if dest != "volume" {
			return nil, "", invalidBDM("unknown destination_type %s.", dest)
		}
		if b.VolumeType != nil && *b.VolumeType != "" && *b.VolumeType != "__DEFAULT__" {
			return nil, "", errdefs.InvalidArgumentf("Volume type %s could not be found.", *b.VolumeType)
		}
		p := bdmPlan{boot: idx == 0, source: b.SourceType, sizeGB: size, tag: b.Tag}
		if d, ok := novaBool(b.DeleteOnTermination); ok && b.DeleteOnTermination != nil {
			p.dot = d
		}
		if b.DeviceName != "" {
			p.device = b.DeviceName
			if !strings.HasPrefix(p.device, "/") {
				p.device = "/dev/" + p.device
			}
		}
		switch b.SourceType {
		case "blank":
			if p.boot {
				return nil, "", invalidBDM("Boot sequence for the instance and image/block device mapping combination is not valid (a blank volume cannot boot a server).")
			}
			if size <= 0 {
				return nil, "", invalidBDM("Blank volumes need a volume_size.")
			}
		case "image":
			img, err := s.findImage(ctx, b.UUID)
			if err != nil {
				return nil, "", errdefs.InvalidArgumentf("Image %s could not be found.", b.UUID)
			}
			if img.Status != "active" {
				return nil, "", errdefs.InvalidArgumentf("Image %s is not active.", img.ID)
			}
			if err := image.Bootable(img); err != nil {
				return nil, "", err
			}
			if p.sizeGB == 0 {
				p.sizeGB = max(img.MinDisk, flavorRootGB, 1)
			}
			if img.MinDisk > p.sizeGB {
				return nil, "", errdefs.InvalidArgumentf("Volume size %dGB cannot be smaller than the image minDisk size %dGB.", p.sizeGB, img.MinDisk)
			}
			p.image = img
		case "snapshot":
			sn, err := store.GetVolumeSnapshot(db, b.UUID)
			if err != nil || sn.ProjectID != project {
				return nil, "", errdefs.InvalidArgumentf("Snapshot %s could not be found.", b.UUID)
			}
			if sn.Status != store.SnapshotAvailable {
				return nil, "", errdefs.InvalidArgumentf("Invalid snapshot: snapshot %s status must be 'available'.", sn.ID)
			}
			if p.sizeGB == 0 {
				p.sizeGB = sn.SizeGB
			}
			if p.sizeGB < sn.SizeGB {
				return nil, "", errdefs.InvalidArgumentf("Volume size %dGB cannot be smaller than the snapshot size %dGB.", p.sizeGB, sn.SizeGB)
			}
			if src, err := store.GetVolume(db, sn.VolumeID); err == nil && src.ImageID != "" {
				p.image = &store.Image{ID: src.ImageID}
			} else if baseImage != "" {
				p.image = &store.Image{ID: baseImage}
			}
			if p.boot && p.image == nil {
				return nil, "", errdefs.InvalidArgumentf("Block Device %s is not bootable.", sn.ID)
			}
			if sn.Backend == protocol.BackendLocal {
				if err := bind(sn.Host); err != nil {
					return nil, "", err
				}
			}
			p.snapshot = sn
		case "volume":
			v, err := store.GetVolume(db, b.UUID)
			if err != nil || v.ProjectID != project {
				return nil, "", errdefs.InvalidArgumentf("Volume %s could not be found.", b.UUID)
			}
			if v.Status != store.VolumeAvailable {
				return nil, "", errdefs.InvalidArgumentf("Invalid volume: volume %s status must be 'available'. Currently in '%s'", v.ID, v.Status)
			}
			if p.boot && v.ImageID == "" {
				return nil, "", errdefs.InvalidArgumentf("Block Device %s is not bootable.", v.ID)
			}
			if v.Backend == protocol.BackendLocal {
				if err := bind(v.Host); err != nil {
					return nil, "", err
				}
			}
			p.volume = v
		default:
			return nil, "", invalidBDM("unknown source_type %s.", b.SourceType)
		}
		plans = append(plans, p)
	}
	if boots > 1 {
		return nil, "", invalidBDM("Boot sequence for the instance and image/block device mapping combination is not valid (more than one boot_index 0).")
	}
	return plans, host, nil
}

// mergeBDMs puts a request's mappings over an image's: one with the
// device_name of an image's mapping replaces it, as Nova's merge does.
func mergeBDMs(image, req []json.RawMessage) []json.RawMessage {
	dev := func(raw json.RawMessage) string {
		var b bdmIn
		_ = json.Unmarshal(raw, &b)
		return strings.TrimPrefix(b.DeviceName, "/dev/")
	}
	taken := map[string]bool{}
	for _, r := range req {
		if d := dev(r); d != "" {
			taken[d] = true
		}
	}
	var out []json.RawMessage
	for _, i := range image {
		if d := dev(i); d == "" || !taken[d] {
			out = append(out, i)
		}
	}
	return append(out, req...)
}

// ephemeralOf checks a blank -> local mapping: an ephemeral disk (ext4)
// of size GB (0: the flavor's). A swap disk is refused: a container has
// no swap device of its own, its memory is its cgroup's (memory.swap.max
// is 0 for every server), so a swap disk could not be honoured.
func ephemeralOf(b bdmIn, bootIndex, size int) (store.EphemeralDisk, error) {
	if b.GuestFormat == "swap" {
		return store.EphemeralDisk{}, invalidBDM("Swap disks (guest_format=swap) are not supported: a Capsule server is a container, which has no swap device of its own (its memory is its cgroup's and is not swapped); use a flavor with more RAM instead.")
	}
	if bootIndex == 0 {
		return store.EphemeralDisk{}, invalidBDM("Boot sequence for the instance and image/block device mapping combination is not valid (a blank local disk cannot boot a server).")
	}
	switch b.GuestFormat {
	case "", "ext4", "ext3", "ext2":
	default:
		return store.EphemeralDisk{}, invalidBDM("guest_format %s is not supported for ephemeral disks: they are ext4 filesystems (guest_format ext4, or none).", b.GuestFormat)
	}
	return store.EphemeralDisk{SizeGB: size, Format: "ext4"}, nil
}

// maxEphemeralDisks bounds a server's ephemeral disks (Nova's
// max_local_block_devices counts every local disk; its default is 3).
const maxEphemeralDisks = 3

// ephemeralDisks settles a create's ephemeral disks with its flavor, as
// Nova does: a mapping without a size takes the flavor's ephemeral size;
// together they may not exceed it; without any, a flavor with an
// ephemeral size gives the server one disk of that size.
func ephemeralDisks(asked []store.EphemeralDisk, flavorEphemeralGB int) ([]store.EphemeralDisk, error) {
	if len(asked) == 0 {
		if flavorEphemeralGB > 0 {
			return []store.EphemeralDisk{{SizeGB: flavorEphemeralGB, Format: "ext4"}}, nil
		}
		return nil, nil
	}
	if len(asked) > maxEphemeralDisks {
		return nil, invalidBDM("Maximum number of ephemeral disks (%d) exceeded.", maxEphemeralDisks)
	}
	total := 0
	out := make([]store.EphemeralDisk, len(asked))
	for i, d := range asked {
		if d.SizeGB == 0 {
			d.SizeGB = flavorEphemeralGB
		}
		if d.SizeGB <= 0 {
			return nil, invalidBDM("Ephemeral disks need a size: give volume_size, or use a flavor with an ephemeral disk (OS-FLV-EXT-DATA:ephemeral).")
		}
		total += d.SizeGB
		out[i] = d
	}
	if total > flavorEphemeralGB {
		// Nova's InvalidBDMEphemeralSize.
		return nil, errdefs.InvalidArgument("Ephemeral disks requested are larger than the instance type allows. If no size is given in one block device mapping, flavor ephemeral size will be used.")
	}
	return out, nil
}

// bootVolumePlan is the plan that boots the server (nil: it boots from
// its image).
func bootVolumePlan(plans []bdmPlan) *bdmPlan {
	for i := range plans {
		if plans[i].boot {
			return &plans[i]
		}
	}
	return nil
}

// newGigabytes is what plans add to the volume quota per server.
func newGigabytes(plans []bdmPlan) (vols, gb, largest int) {
	for _, p := range plans {
		if p.volume == nil {
			vols++
			gb += p.sizeGB
			largest = max(largest, p.sizeGB)
		}
	}
	return vols, gb, largest
}

// recordBDMs records in tx the volumes and attachments of plans for a new
// server inst (see instance/bdm.go for what happens to them).
func (s *Service) recordBDMs(tx *gorm.DB, inst *store.Instance, plans []bdmPlan, now time.Time) error {
	var atts []store.VolumeAttachment
	for _, p := range plans {
		v := p.volume
		if v == nil {
			v = &store.Volume{ID: uuid.NewString(), ProjectID: inst.ProjectID, UserID: inst.UserID, SizeGB: p.sizeGB,
				Status: store.VolumeCreating, VolumeType: "__DEFAULT__", AvailabilityZone: s.opts.VolumeZone,
				Backend: s.opts.VolumeBackend, Metadata: "{}", CreatedAt: now, UpdatedAt: now}
			if v.Backend == "" {
				v.Backend = protocol.BackendLocal
			}
			if p.image != nil {
				v.ImageID, v.Bootable = p.image.ID, true
			}
			if p.snapshot != nil {
				v.SnapshotID, v.Backend, v.Host = p.snapshot.ID, p.snapshot.Backend, p.snapshot.Host
			}
			if err := tx.Create(v).Error; err != nil {
				return fmt.Errorf("record volume of server %s: %w", inst.ID, err)
			}
		} else {
			ok, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeAvailable}, store.VolumeAttaching, map[string]any{"error_message": ""})
			if err != nil {
				return err
			}
			if !ok {
				return errdefs.InvalidArgumentf("Invalid volume: volume %s status must be 'available'.", v.ID)
			}
		}
		a := store.VolumeAttachment{ID: uuid.NewString(), VolumeID: v.ID, InstanceID: inst.ID, Device: p.device,
			Tag: p.tag, DeleteOnTermination: p.dot, Status: store.AttachmentAttaching, CreatedAt: now, UpdatedAt: now}
		if p.boot {
			if a.Device == "" {
				a.Device = "/dev/vda"
			}
			a.MountPath = protocol.RootMountPath
		} else {
			if a.Device == "" {
				a.Device = nextDevice(atts)
			}
			for _, o := range atts {
				if o.Device == a.Device {
					return errdefs.InvalidArgumentf("The supplied device path (%s) is in use.", a.Device)
				}
			}
			if a.Device == "" {
				return errdefs.InvalidArgument("No free device name is left for this server.")
			}
			a.MountPath = mountPathOf(a.Device, v.ID)
		}
		if err := tx.Create(&a).Error; err != nil {
			return fmt.Errorf("record attachment of server %s: %w", inst.ID, err)
		}
		atts = append(atts, a)
	}
	return nil
}
