package compute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/limits"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Resize is live and in place when the server's host holds the new
// flavor (with the server's own claim given back first); on a host
// without room it becomes a cold migration onto another host with the
// new flavor (package migrate, see migrate.go), as Nova's resize moves
// hosts.

// How a resize is made is decided in two places, each with what it can
// know: here, whether it stays on the server's host (newHostResize, and
// a host without room for the new flavor: store.ErrInsufficient) or is a
// cold migration with the new flavor onto another host; on the host, the
// agent's handleResize, whether it is live, a cold restart (what the
// driver can change only on a stopped server) or a remake of the
// container (a new root disk where the host caps root disks). Either way
// the server ends in VERIFY_RESIZE, or back as it was with a fault.

// newHostResize says why a resize of inst to a flavor with limits lim
// must make the server anew on another host ("" when it need not): its
// hw:cpu_policy is fixed when its container is made (dedicated CPUs are
// the host's to hand out, whole).
func newHostResize(inst *store.Instance, lim limits.Limits) string {
	if lim.CPU.Dedicated != (jsonMap(inst.ExtraSpecs)[limits.KeyCPUPolicy] == "dedicated") {
		return "the new flavor changes hw:cpu_policy"
	}
	return ""
}

// stateConflict writes Nova's 409 for an action refused in inst's state.
func stateConflict(w http.ResponseWriter, inst *store.Instance, apiName string) {
	msg := fmt.Sprintf("Cannot '%s' instance %s while it is in vm_state %s", apiName, inst.ID, inst.VMState)
	if inst.TaskState != "" {
		msg = fmt.Sprintf("Cannot '%s' instance %s while it is in task_state %s", apiName, inst.ID, inst.TaskState)
	}
	writeFault(w, errdefs.Conflict(msg))
}

// beginOnHost checks that action may start on inst (lifecycle rules) and
// that inst runs somewhere, for actions its host must carry out; it writes
// the 409 itself and returns the task state to set.
func beginOnHost(w http.ResponseWriter, inst *store.Instance, action lifecycle.Action, apiName string) (lifecycle.TaskState, bool) {
	newTask, err := lifecycle.Begin(action, inst.VMState, inst.TaskState)
	if err != nil {
		stateConflict(w, inst, apiName)
		return "", false
	}
	if inst.Host == "" {
		writeFault(w, errdefs.Conflictf("Cannot '%s' instance %s: it is not placed on any host", apiName, inst.ID))
		return "", false
	}
	return newTask, true
}

// flavorRefOf reads the flavorRef of a resize body: an id, an href or a
// number.
func flavorRefOf(arg json.RawMessage) (string, bool) {
	var in struct {
		FlavorRef any `json:"flavorRef"`
	}
	if err := json.Unmarshal(arg, &in); err != nil || in.FlavorRef == nil {
		return "", false
	}
	switch v := in.FlavorRef.(type) {
	case string:
		if v == "" {
			return "", false
		}
		return lastSegment(v), true
	case float64:
		return strconv.Itoa(int(v)), true
	}
	return "", false
}

// specsOf returns a flavor's extra specs as a map and as the JSON the
// instance keeps.
func specsOf(f *store.Flavor) (map[string]string, string) {
	m := map[string]string{}
	for _, es := range f.ExtraSpecs {
		m[es.Key] = es.Value
	}
	b, _ := json.Marshal(m)
	return m, string(b)
}

func (s *Service) resizeServer(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	ref, ok := flavorRefOf(arg)
	if !ok {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute resize. Value: 'flavorRef' is a required property"))
		return
	}
	flavor, err := s.findFlavor(ctx, ref)
	if err != nil || flavor.Disabled || !s.flavorVisible(ctx, flavor) {
		writeFault(w, errdefs.InvalidArgumentf("Flavor %s could not be found.", ref))
		return
	}
	if flavor.ID == inst.FlavorRowID || flavor.FlavorID == inst.FlavorID {
		writeFault(w, errdefs.InvalidArgument("When resizing, instances must change flavor!"))
		return
	}
	// A volume-backed server's root is its volume: Nova ignores the
	// flavor's root disk then (compute/api.py resize).
	vb, err := s.volumeBacked(ctx, inst)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !vb && flavor.RootGB < inst.RootGB {
		// Nova's words (its exception's message), then the numbers.
		writeFault(w, errdefs.InvalidArgumentf(
			"Resizing to a smaller disk flavor is not allowed. Flavor %s has a %d GB root disk, the server has %d GB.", flavor.FlavorID, flavor.RootGB, inst.RootGB))
		return
	}
	specs, specsJSON := specsOf(flavor)
	lim, err := limits.Parse(specs, flavor.VCPUs)
	if err != nil {
		writeFault(w, errdefs.InvalidArgumentf("Flavor %s has invalid extra specs: %v", flavor.FlavorID, err))
		return
	}
	if _, ok := beginOnHost(w, inst, lifecycle.ActResize, "resize"); !ok {
		return
	}
	if why := newHostResize(inst, lim); why != "" {
		s.log.Info("resize made as a cold migration", "instance", inst.ID, "flavor", flavor.FlavorID, "why", why)
		s.beginCold(w, r, inst, flavor, "", "resize")
		return
	}
	reqID := requestID(w)
	now := s.opts.Now()
	mig := store.Migration{UUID: newUUID(), InstanceID: inst.ID, MigrationType: "resize", Status: lifecycle.MigrationPreMigrating,
		SourceCompute: inst.Host, SourceNode: inst.Host, DestCompute: inst.Host, DestNode: inst.Host, DestHost: inst.Host,
		OldFlavorID: inst.FlavorRowID, NewFlavorID: flavor.ID, CreatedAt: now, UpdatedAt: now}
	want := store.Resources{VCPUs: flavor.VCPUs, MemoryMB: flavor.MemoryMB, DiskGB: flavor.RootGB + inst.EphemeralGB()}
	var out outbox.Batch
	// Claim, state, flavor swap, action and migration record commit
	// together: a refused claim leaves nothing behind, and status is
	// RESIZE before the 202 goes out.
	err = s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.resizeQuota(inst, flavor)(tx); err != nil {
			return err
		}
		if err := instance.ResizeClaim(tx, inst.ID, inst.Host, want); err != nil {
			return err
		}
		if _, err := instance.Begin(tx, inst, lifecycle.ActResize, now, instance.SwapFlavor(inst, flavor, specsJSON)); err != nil {
			return err
		}
		if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: "resize", RequestID: reqID,
			UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error; err != nil {
			return fmt.Errorf("record resize action of %s: %w", inst.ID, err)
		}
		if err := tx.Create(&mig).Error; err != nil {
			return fmt.Errorf("record resize migration of %s: %w", inst.ID, err)
		}
		oldSpecs := jsonMap(inst.ExtraSpecs)
		body := protocol.ResizeInstance{RequestID: reqID, InstanceID: inst.ID, MigrationID: mig.ID,
			Spec: protocol.InstanceSpec{ID: inst.ID, Name: inst.Name, ProjectID: inst.ProjectID,
				VCPUs: flavor.VCPUs, MemoryMB: flavor.MemoryMB, DiskGB: flavor.RootGB, ExtraSpecs: specs},
			Old: protocol.InstanceSpec{ID: inst.ID, Name: inst.Name, ProjectID: inst.ProjectID,
				VCPUs: inst.VCPUs, MemoryMB: inst.MemoryMB, DiskGB: inst.RootGB, ExtraSpecs: oldSpecs},
			Running: inst.VMState == lifecycle.Active}
		// The agent's work commits with the resize (the outbox).
		return s.cast(tx, &out, inst.Host, inst.ID, protocol.KindResizeInstance, body)
	})
	switch {
	case errdefs.IsQuotaExceeded(err):
		s.fail(w, r, err)
		return
	case errors.Is(err, store.ErrInsufficient):
		// The host lacks room (the transaction left nothing behind):
		// resize onto another host, cold.
		s.beginCold(w, r, inst, flavor, "", "resize")
		return
	case errors.Is(err, errStateChanged):
		writeFault(w, errdefs.Conflictf("Cannot 'resize' instance %s: its state changed meanwhile", inst.ID))
		return
	case err != nil:
		s.log.Error("start resize", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	s.deliver(ctx, &out)
	if err := instance.AdvanceMigration(s.st.WithContext(ctx), mig.ID, lifecycle.MigrationPreMigrating, lifecycle.MigrationMigrating); err != nil {
		s.log.Warn("mark resize migration migrating", "instance", inst.ID, "error", err)
	}
	noContent(w, http.StatusAccepted)
}

// cast writes one message to a compute host, about the server
// instanceID, in tx, into out: it goes out once tx committed (deliver),
// so the state change and the message it implies commit together.
func (s *Service) cast(tx *gorm.DB, out *outbox.Batch, host, instanceID, kind string, body any) error {
	msg, err := bus.NewMessage(kind, body)
	if err != nil {
		return err
	}
	return out.Enqueue(tx, bus.ComputeQueue(host), instanceID, msg)
}

// deliver publishes what a committed transaction cast. It is best effort
// and does not stop when the client hangs up: the work is accepted once it
// committed, and a message that cannot go now is the conductor's outbox
// relay's to send.
func (s *Service) deliver(ctx context.Context, out *outbox.Batch) {
	if s.opts.AfterCommit != nil {
		s.opts.AfterCommit()
	}
	if err := s.outbox.Deliver(ctx, out); err != nil {
		s.log.Warn("publish committed messages; the outbox relay will retry", "error", err)
	}
}

// resizeQuota is the guard of a resize to f, run first in the
// transaction that swaps the flavor: it checks the growth the new flavor
// asks for (a shrink always fits) as Nova's upsize check (growQuota).
func (s *Service) resizeQuota(inst *store.Instance, f *store.Flavor) store.Guard {
	return s.growQuota(inst, "resize", store.QuotaUsage{Cores: f.VCPUs - inst.VCPUs, RAM: f.MemoryMB - inst.MemoryMB})
}

// revertQuota is the guard of a revert of inst's resize: the old flavor
// comes back, so reverting a shrink grows the server, which Nova checks
// against the quota as an upsize (its revert_resize); a plain migration
// (no old flavor) changes nothing.
func (s *Service) revertQuota(inst *store.Instance) store.Guard {
	if inst.OldFlavorID == "" {
		return nil
	}
	return s.growQuota(inst, "revertResize", store.QuotaUsage{Cores: inst.OldVCPUs - inst.VCPUs, RAM: inst.OldMemoryMB - inst.MemoryMB})
}

// growQuota checks grow (cores and RAM a server of inst's takes on top
// of what it holds; nothing to check when it does not grow) against the
// quota of the server's project, and of its owner where the owner has
// limits of their own, under the project's compute quota lock, so two
// concurrent growths (or a growth and a create) cannot both take the last
// cores or RAM. It runs first in the transaction that records the change.
func (s *Service) growQuota(inst *store.Instance, apiName string, grow store.QuotaUsage) store.Guard {
	return func(tx *gorm.DB) error {
		if grow.Cores <= 0 && grow.RAM <= 0 {
			return nil
		}
		if err := store.LockQuota(tx, store.ComputeQuota, inst.ProjectID); err != nil {
			s.log.Error("quota lock of a "+apiName, "instance", inst.ID, "error", err)
			return quotaUnchecked(err)
		}
		qc, err := s.loadQuotaCheck(tx, inst.ProjectID, inst.UserID)
		if err != nil {
			s.log.Error("quota check of a "+apiName, "instance", inst.ID, "error", err)
			return quotaUnchecked(err)
		}
		return qc.over(grow)
	}
}

// confirmResize keeps the new flavor: the old copy is dropped, the
// migration confirmed and the server back in the state it was resized
// from. A cold migration's confirm is package migrate's (finishCold); a
// same-host resize's is synchronous (the new limits already apply; 204 as
// Nova): the host is only told to drop what it kept for a revert (a root
// disk resize's old container), which its reconcile also does.
func (s *Service) confirmResize(w http.ResponseWriter, r *http.Request, inst *store.Instance) {
	if s.finishCold(w, r, inst, true) {
		return
	}
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	vm, task := inst.VMState, inst.TaskState
	if _, err := lifecycle.Begin(lifecycle.ActConfirmResize, vm, task); err != nil {
		stateConflict(w, inst, "confirmResize")
		return
	}
	now := s.opts.Now()
	back := lifecycle.ResizeOutcome(inst.ResizeFromState)
	reqID := requestID(w)
	var out outbox.Batch
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		ok, err := instance.Apply(tx, inst.ID, instance.In(vm, task),
			instance.Change{VM: back, Task: lifecycle.NoTask, Set: instance.ForgetOldFlavor(), At: now})
		if err != nil {
			return fmt.Errorf("confirm resize of %s: %w", inst.ID, err)
		}
		if !ok {
			return errStateChanged
		}
		if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: "confirmResize", RequestID: reqID,
			UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error; err != nil {
			return fmt.Errorf("record confirmResize of %s: %w", inst.ID, err)
		}
		if err := instance.SetResizeStatus(tx, inst.ID, lifecycle.MigrationConfirmed); err != nil {
			return err
		}
		// The host drops what it kept for a revert (a root disk
		// resize's old container); no answer is awaited.
		return s.cast(tx, &out, inst.Host, inst.ID, protocol.KindConfirmResize,
			protocol.ResizeInstance{RequestID: reqID, InstanceID: inst.ID})
	})
	switch {
	case errors.Is(err, errStateChanged):
		writeFault(w, errdefs.Conflictf("Cannot 'confirmResize' instance %s: its state changed meanwhile", inst.ID))
	case err != nil:
		s.log.Error("confirm resize", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
	default:
		s.deliver(ctx, &out)
		noContent(w, http.StatusNoContent)
	}
}

// revertResize gives the server its old flavor back (a cold migration's
// revert is package migrate's: finishCold). A revert that grows the
// server (the resize had shrunk it) must fit the quota (revertQuota). For
// a live resize the claim returns to the old size at once (it always
// fits: the server held it before), the agent applies the old limits, and
// the conductor restores the flavor copy when it reports.
func (s *Service) revertResize(w http.ResponseWriter, r *http.Request, inst *store.Instance) {
	if s.finishCold(w, r, inst, false) {
		return
	}
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	vm, task := inst.VMState, inst.TaskState
	_, err := lifecycle.Begin(lifecycle.ActRevertResize, vm, task)
	if err != nil {
		stateConflict(w, inst, "revertResize")
		return
	}
	if inst.OldFlavorID == "" {
		writeFault(w, errdefs.Conflictf("Instance %s has no resize to revert.", inst.ID))
		return
	}
	reqID := requestID(w)
	now := s.opts.Now()
	old := store.Resources{VCPUs: inst.OldVCPUs, MemoryMB: inst.OldMemoryMB, DiskGB: inst.OldRootGB + inst.EphemeralGB()}
	var out outbox.Batch
	guard := s.revertQuota(inst)
	err = s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if guard != nil {
			if err := guard(tx); err != nil {
				return err
			}
		}
		if err := instance.ResizeClaim(tx, inst.ID, inst.Host, old); err != nil {
			return err
		}
		if _, err := instance.Begin(tx, inst, lifecycle.ActRevertResize, now, nil); err != nil {
			return err
		}
		if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: "revertResize", RequestID: reqID,
			UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error; err != nil {
			return fmt.Errorf("record revertResize of %s: %w", inst.ID, err)
		}
		if err := instance.SetResizeStatus(tx, inst.ID, lifecycle.MigrationReverting); err != nil {
			return err
		}
		body := protocol.ResizeInstance{RequestID: reqID, InstanceID: inst.ID,
			Spec: protocol.InstanceSpec{ID: inst.ID, Name: inst.Name, ProjectID: inst.ProjectID,
				VCPUs: inst.OldVCPUs, MemoryMB: inst.OldMemoryMB, DiskGB: inst.OldRootGB, ExtraSpecs: jsonMap(inst.OldExtraSpecs)},
			Old: protocol.InstanceSpec{ID: inst.ID, Name: inst.Name, ProjectID: inst.ProjectID,
				VCPUs: inst.VCPUs, MemoryMB: inst.MemoryMB, DiskGB: inst.RootGB, ExtraSpecs: jsonMap(inst.ExtraSpecs)},
			Running: lifecycle.ResizeOutcome(inst.ResizeFromState) == lifecycle.Active}
		return s.cast(tx, &out, inst.Host, inst.ID, protocol.KindRevertResize, body)
	})
	switch {
	case errdefs.IsQuotaExceeded(err):
		s.fail(w, r, err)
		return
	case errors.Is(err, errStateChanged):
		writeFault(w, errdefs.Conflictf("Cannot 'revertResize' instance %s: its state changed meanwhile", inst.ID))
		return
	case errors.Is(err, store.ErrInsufficient):
		// Only if the host shrank (its capacity was re-reported) since.
		writeFault(w, errdefs.InvalidArgumentf("No valid host was found. Host %s has no room left for the old flavor %s.", inst.Host, inst.OldFlavorID))
		return
	case err != nil:
		s.log.Error("start revert resize", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	s.deliver(ctx, &out)
	noContent(w, http.StatusAccepted)
}

// listMigrations is GET /os-migrations (admin): resizes and cold
// migrations in every status, newest first, with Nova's filters.
func (s *Service) listMigrations(w http.ResponseWriter, r *http.Request) {
	v := versionOf(r.Context())
	q := s.st.WithContext(r.Context()).Model(&store.Migration{})
	qs := r.URL.Query()
	if h := qs.Get("host"); h != "" {
		q = q.Where("source_compute = ? OR dest_compute = ?", h, h)
	}
	if st := qs.Get("status"); st != "" {
		q = q.Where("status = ?", st)
	}
	if id := qs.Get("instance_uuid"); id != "" {
		q = q.Where("instance_id = ?", id)
	}
	if t := qs.Get("migration_type"); t != "" {
		q = q.Where("migration_type = ?", t)
	}
	if v.AtLeast(80) {
		for key, col := range map[string]string{"user_id": "user_id", "project_id": "project_id"} {
			if val := qs.Get(key); val != "" {
				q = q.Where(col+" = ?", val)
			}
		}
	}
	since, before, err := changesWindow(qs, v, v.AtLeast(59))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q = whereChanged(q, since, before)
	var ms []store.Migration
	if err := q.Order("created_at DESC").Order("id DESC").Find(&ms).Error; err != nil {
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	out := make([]map[string]any, 0, len(ms))
	for _, m := range ms {
		item := map[string]any{"id": m.ID, "status": m.Status, "instance_uuid": m.InstanceID,
			"source_node": m.SourceNode, "source_compute": m.SourceCompute, "dest_node": m.DestNode,
			"dest_compute": m.DestCompute, "dest_host": m.DestHost,
			"old_instance_type_id": m.OldFlavorID, "new_instance_type_id": m.NewFlavorID,
			"created_at": m.CreatedAt.UTC().Format(actionFmt), "updated_at": m.UpdatedAt.UTC().Format(actionFmt)}
		if v.AtLeast(23) {
			item["migration_type"] = m.MigrationType
			item["links"] = []map[string]string{}
		}
		if v.AtLeast(59) {
			item["uuid"] = m.UUID
		}
		if v.AtLeast(80) {
			item["user_id"], item["project_id"] = m.UserID, m.ProjectID
		}
		out = append(out, item)
	}
	writeJSON(w, http.StatusOK, map[string]any{"migrations": out})
}
