package conductor

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Shelve, offload, unshelve: the conductor records what the hosts report
// (instance/shelve.go has the transitions), offloads shelved servers once
// shelved_offload_time passed, and deletes a shelve image (row and
// registry tag) once its server is unshelved or deleted.

// onShelveReport records a shelve's push: the shelve image goes active
// and the server shelved, then offloaded at once when
// shelved_offload_time is 0; or the image is removed and the server left
// stopped (as the failed shelve left it) with a fault.
func (c *Conductor) onShelveReport(ctx context.Context, r protocol.SnapshotReport) error {
	inst, err := c.loadInstance(ctx, r.InstanceID)
	if err != nil {
		return err
	}
	now := c.now()
	shelved := false
	err = c.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := c.recordImage(tx, r, now); err != nil {
			return err
		}
		var err error
		if r.OK {
			shelved, err = instance.Shelved(tx, r.InstanceID, r.Host, r.ImageID, now)
			return err
		}
		_, err = instance.ShelveFailed(tx, r.InstanceID, r.Host, inst.VMState, lifecycle.PowerState(r.PowerState),
			instance.Fault{Code: 500, Message: fmt.Sprintf("Shelve of instance %s failed: %s.", r.InstanceID, snapshotWhy(r)),
				Details: r.Error, At: now})
		return err
	})
	if err != nil {
		return err
	}
	if !shelved {
		return nil
	}
	c.log.Info("instance shelved", "instance", r.InstanceID, "host", r.Host, "image", r.ImageID)
	if c.cfg.ShelvedOffloadTime == 0 {
		return c.offload(ctx, r.InstanceID, r.Host, r.RequestID, nil)
	}
	return nil
}

// offload starts the offload of shelved instance id on host and sends
// the host its work (through the outbox), as part of the instance action
// requestID; with action set, that action is recorded first (an offload
// the conductor starts on its own). An instance no longer shelved with no
// task (offloaded by another pass, unshelved, deleted) is left alone.
func (c *Conductor) offload(ctx context.Context, id, host, requestID string, action *store.InstanceAction) error {
	var out outbox.Batch
	started := false
	err := c.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		ok, err := instance.BeginOffload(tx, id, host, c.now())
		if err != nil || !ok {
			return err
		}
		started = true
		if action != nil {
			if err := tx.Create(action).Error; err != nil {
				return fmt.Errorf("record offload action of %s: %w", id, err)
			}
		}
		refs, err := instance.OffloadVolumeRefs(tx, id, host)
		if err != nil {
			return err
		}
		msg, err := bus.NewMessage(protocol.KindInstanceAction,
			protocol.InstanceAction{RequestID: requestID, InstanceID: id, Action: lifecycle.ActShelveOffload, VolumeRefs: refs})
		if err != nil {
			return err
		}
		return out.Enqueue(tx, bus.ComputeQueue(host), id, msg)
	})
	if errdefs.IsConflict(err) {
		// A volume attach or detach still in flight (or no shelve image
		// to park its local volumes next to): it stays shelved, and the
		// next pass of offloadShelved tries again.
		c.log.Warn("shelved instance not offloaded for now", "instance", id, "host", host, "reason", err)
		return nil
	}
	if err != nil || !started {
		return err
	}
	c.log.Info("offloading shelved instance", "instance", id, "host", host)
	if err := c.outbox.Deliver(ctx, &out); err != nil {
		c.log.Warn("publish offload; the outbox relay will retry", "instance", id, "error", err)
	}
	return nil
}

// offloadShelved offloads the shelved servers (no task) shelved longer
// than shelved_offload_time ago (Nova's _poll_shelved_instances); with 0
// it catches any whose immediate offload was lost. A negative time never
// offloads.
func (c *Conductor) offloadShelved(ctx context.Context) {
	if c.cfg.ShelvedOffloadTime < 0 {
		return
	}
	var due []store.Instance
	err := c.st.WithContext(ctx).Where("vm_state = ? AND task_state = ? AND deleted_at IS NULL AND host <> ? AND shelved_at <= ?",
		lifecycle.Shelved, lifecycle.NoTask, "", c.now().Add(-c.cfg.ShelvedOffloadTime)).Find(&due).Error
	if err != nil {
		c.log.Error("find shelved instances to offload", "error", err)
		return
	}
	for _, inst := range due {
		now := c.now()
		reqID := "req-" + uuid.NewString()
		act := &store.InstanceAction{InstanceID: inst.ID, Action: "shelveOffload", RequestID: reqID,
			UserID: inst.UserID, ProjectID: inst.ProjectID, StartTime: now, UpdatedAt: now}
		if err := c.offload(ctx, inst.ID, inst.Host, reqID, act); err != nil {
			c.log.Error("offload shelved instance", "instance", inst.ID, "error", err)
		}
	}
}

// onOffloadReport: the host removed the shelved server's container and
// sandbox; it is offloaded (no host, room and port bindings released),
// or, when the host failed, still shelved there with a fault.
func (c *Conductor) onOffloadReport(ctx context.Context, inst *store.Instance, r protocol.InstanceReport) error {
	if inst.DeletedAt != nil {
		return nil
	}
	db := c.st.WithContext(ctx)
	now := c.now()
	if !r.OK {
		_, err := instance.OffloadFailed(db, inst.ID, r.Host, instance.Fault{Code: 500, At: now, Details: r.Error,
			Message: failedBecause(fmt.Sprintf("Offload of shelved instance %s failed", inst.ID), r)})
		return err
	}
	ok, err := instance.Offloaded(db, inst.ID, r.Host, now)
	if err == nil && ok {
		c.log.Info("shelved instance offloaded", "instance", inst.ID, "host", r.Host)
	}
	return err
}

// onUnshelveReport: the host started the shelved server, or spawned the
// offloaded one from its shelve image. It is active, and its shelve image
// goes (row, then registry tag); or the unshelve failed and it stays
// shelved (offloaded: on no host again) with a fault.
func (c *Conductor) onUnshelveReport(ctx context.Context, inst *store.Instance, r protocol.InstanceReport) error {
	if inst.DeletedAt != nil {
		return nil
	}
	now := c.now()
	db := c.st.WithContext(ctx)
	if !r.OK {
		fault := instance.Fault{Code: 500, At: now, Details: r.Error,
			Message: failedBecause(fmt.Sprintf("Unshelve of instance %s failed", inst.ID), r)}
		if r.Host == "" {
			// Never placed (the sweeper ends an unshelve no scheduler
			// answered).
			_, err := instance.UnshelveUnplaced(db, inst.ID, fault)
			return err
		}
		ok, err := instance.UnshelveFailed(db, inst.ID, r.Host, fault)
		if err == nil && ok {
			c.log.Warn("unshelve failed", "instance", inst.ID, "host", r.Host, "error", r.Error)
		}
		return err
	}
	var ref string
	var volRefs map[string]string
	err := db.Transaction(func(tx *gorm.DB) error {
		// The local volumes its offload pushed: the host pulled them, and
		// Unshelved moves them there.
		img, err := instance.ShelveImage(tx, inst)
		if err != nil {
			return err
		}
		if img != nil {
			if volRefs, err = instance.ShelvedVolumeRefs(tx, inst.ID, "", img.RegistryRef); err != nil {
				return err
			}
		}
		ok, err := instance.Unshelved(tx, inst.ID, r.Host, lifecycle.PowerState(r.PowerState), now)
		if err != nil || !ok {
			volRefs = nil
			return err
		}
		ref, err = dropShelveImage(tx, inst)
		return err
	})
	if err != nil {
		return err
	}
	c.log.Info("instance unshelved", "instance", inst.ID, "host", r.Host, "image", inst.ShelvedImageID, "volumes", len(volRefs))
	c.releaseShelveImage(ctx, inst, ref)
	for _, vol := range slices.Sorted(maps.Keys(volRefs)) {
		// The volume lives on r.Host now: its tag has done its job.
		c.releaseShelveImage(ctx, inst, volRefs[vol])
	}
	return nil
}

// forgetShelveImage deletes the shelve image of a deleted server (row,
// then tag).
func (c *Conductor) forgetShelveImage(ctx context.Context, inst *store.Instance) {
	if inst.ShelvedImageID == "" {
		return
	}
	var ref string
	err := c.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		ref, err = dropShelveImage(tx, inst)
		return err
	})
	if err != nil {
		c.log.Error("delete the shelve image of a deleted instance", "instance", inst.ID, "image", inst.ShelvedImageID, "error", err)
		return
	}
	c.releaseShelveImage(ctx, inst, ref)
}

// releaseShelveImage removes a dropped shelve image's registry tag (best
// effort, as Glance's image delete: the row is gone already).
func (c *Conductor) releaseShelveImage(ctx context.Context, inst *store.Instance, ref string) {
	if ref == "" {
		return
	}
	if c.reg == nil {
		c.log.Warn("no registry client: shelve image left in the registry", "instance", inst.ID, "ref", ref)
		return
	}
	if err := c.releaseImage(ctx, ref); err != nil {
		c.log.Warn("delete tag of shelve image", "instance", inst.ID, "ref", ref, "error", err)
	}
}

// dropShelveImage deletes inst's shelve image row and returns its
// registry reference ("" when there is none to release).
func dropShelveImage(tx *gorm.DB, inst *store.Instance) (string, error) {
	img, err := instance.DropShelveImage(tx, inst)
	if err != nil || img == nil {
		return "", err
	}
	return img.RegistryRef, nil
}

// outboxOwner names this conductor's outbox deliveries.
func outboxOwner() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("conductor@%s:%d", host, os.Getpid())
}
