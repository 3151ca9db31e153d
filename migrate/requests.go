package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// The API's entry points (api.go) only change the database, each in one
// transaction guarded on the instance's state; the engine carries the
// step out when the API's Kick (or its periodic pass) reaches it.

// migrationTasks are the task states of a migration before it finished.
var migrationTasks = []lifecycle.TaskState{lifecycle.ResizePrep, lifecycle.ResizeMigrating,
	lifecycle.ResizeMigrated, lifecycle.ResizeFinish}

func now(req Request) time.Time {
	if req.Now.IsZero() {
		return time.Now().UTC()
	}
	return req.Now.UTC()
}

// Active returns the instance's cold migration whose outcome is not
// recorded yet (nil when there is none).
func Active(ctx context.Context, db *gorm.DB, instanceID string) (*store.Migration, error) {
	var m store.Migration
	err := db.WithContext(ctx).Where("instance_id = ? AND step <> '' AND status NOT IN ?", instanceID, terminalStatuses).
		Order("id DESC").Limit(1).Find(&m).Error
	if err != nil {
		return nil, fmt.Errorf("active migration of %s: %w", instanceID, err)
	}
	if m.ID == 0 {
		return nil, nil
	}
	return &m, nil
}

// ThroughHost returns the ids of the servers whose cold migration has
// host as its source or target and is not over (its steps still run, or
// its outcome is not recorded): their disks' copies on host are the
// migration's, whoever the server is placed on.
func ThroughHost(ctx context.Context, db *gorm.DB, host string) ([]string, error) {
	ids := []string{}
	err := db.WithContext(ctx).Model(&store.Migration{}).
		Where("(source_compute = ? OR dest_compute = ?) AND step <> '' AND (step <> ? OR status NOT IN ?)",
			host, host, StepDone, terminalStatuses).
		Distinct().Order("instance_id").Pluck("instance_id", &ids).Error
	if err != nil {
		return nil, fmt.Errorf("migrations through host %s: %w", host, err)
	}
	return ids, nil
}

func begin(ctx context.Context, st *store.Store, req BeginRequest) (*store.Migration, error) {
	inst := req.Instance
	if inst == nil {
		return nil, errors.New("migrate: begin without an instance")
	}
	vm := inst.VMState
	if _, err := lifecycle.Begin(lifecycle.ActMigrate, vm, inst.TaskState); err != nil {
		return nil, err
	}
	if inst.Host == "" || inst.DeletedAt != nil {
		return nil, fmt.Errorf("%w: instance %s is not placed on any host", ErrStateChanged, inst.ID)
	}
	at := now(req.Request)
	action, mtype := req.Action, "migration"
	if req.NewFlavor != nil {
		mtype = "resize"
	}
	if action == "" {
		action = string(lifecycle.ActMigrate)
		if req.NewFlavor != nil {
			action = string(lifecycle.ActResize)
		}
	}
	m := store.Migration{UUID: uuid.NewString(), InstanceID: inst.ID, MigrationType: mtype,
		Status: lifecycle.MigrationPreMigrating, SourceCompute: inst.Host, SourceNode: inst.Host,
		OldFlavorID: inst.FlavorRowID, NewFlavorID: inst.FlavorRowID, Step: string(StepScheduling),
		RequestedHost: req.Host, RequestID: req.RequestID, UserID: req.UserID, ProjectID: req.ProjectID,
		SourceVMState: vm, StepStartedAt: &at, CreatedAt: at, UpdatedAt: at}
	if req.NewFlavor != nil {
		m.NewFlavorID = req.NewFlavor.ID
	}
	err := st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if req.Guard != nil {
			if err := req.Guard(tx); err != nil {
				return err
			}
		}
		if busy, err := Active(ctx, tx, inst.ID); err != nil {
			return err
		} else if busy != nil {
			return fmt.Errorf("%w: migration %s of instance %s is still %s", ErrStateChanged, busy.UUID, inst.ID, busy.Status)
		}
		specs := ""
		if f := req.NewFlavor; f != nil {
			var err error
			if specs, err = extraSpecsJSON(tx, f); err != nil {
				return err
			}
		}
		fields := instance.SwapFlavor(inst, req.NewFlavor, specs)
		if _, err := instance.Begin(tx, inst, lifecycle.ActMigrate, at, fields); errors.Is(err, instance.ErrStateChanged) {
			return ErrStateChanged
		} else if err != nil {
			return fmt.Errorf("start migration of %s: %w", inst.ID, err)
		}
		if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: action, RequestID: req.RequestID,
			UserID: req.UserID, ProjectID: req.ProjectID, StartTime: at, UpdatedAt: at}).Error; err != nil {
			return fmt.Errorf("record %s action of %s: %w", action, inst.ID, err)
		}
		if err := tx.Create(&m).Error; err != nil {
			return fmt.Errorf("record migration of %s: %w", inst.ID, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slog.Info("cold migration requested", "migration", m.UUID, "instance", inst.ID, "type", mtype,
		"source", inst.Host, "requested_host", req.Host, "step", m.Step)
	return &m, nil
}

// extraSpecsJSON is the flavor's extra specs as the instance keeps them
// (a JSON object), read from the database unless the caller loaded them.
func extraSpecsJSON(tx *gorm.DB, f *store.Flavor) (string, error) {
	specs := f.ExtraSpecs
	if specs == nil {
		if err := tx.Where("flavor_id = ?", f.ID).Find(&specs).Error; err != nil {
			return "", fmt.Errorf("extra specs of flavor %s: %w", f.FlavorID, err)
		}
	}
	m := map[string]string{}
	for _, es := range specs {
		m[es.Key] = es.Value
	}
	b, err := json.Marshal(m)
	return string(b), err
}

func pending(ctx context.Context, st *store.Store, instanceID string) (*store.Migration, error) {
	var m store.Migration
	err := st.WithContext(ctx).Where("instance_id = ? AND step = ?", instanceID, string(StepFinished)).
		Order("id DESC").Limit(1).Find(&m).Error
	if err != nil {
		return nil, fmt.Errorf("pending migration of %s: %w", instanceID, err)
	}
	if m.ID == 0 {
		return nil, ErrNoPending
	}
	return &m, nil
}

// settle ends the wait in VERIFY_RESIZE of inst's pending migration: in
// one transaction the instance gets fields (guarded on its state), the
// migration moves to step to with status, and the action is recorded.
func settle(ctx context.Context, st *store.Store, inst *store.Instance, req Request, action lifecycle.Action, apiAction string,
	change func(m *store.Migration, task lifecycle.TaskState) instance.Change, to Step, status lifecycle.MigrationStatus) (*store.Migration, error) {
	m, err := pending(ctx, st, inst.ID)
	if err != nil {
		return nil, err
	}
	vm, task := inst.VMState, inst.TaskState
	newTask, err := lifecycle.Begin(action, vm, task)
	if err != nil {
		return nil, err
	}
	at := now(req)
	err = st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if req.Guard != nil {
			if err := req.Guard(tx); err != nil {
				return err
			}
		}
		c := change(m, newTask)
		c.At = at
		ok, err := instance.Apply(tx, inst.ID, instance.In(vm, task), c)
		if err != nil {
			return fmt.Errorf("%s of %s: %w", apiAction, inst.ID, err)
		}
		if !ok {
			return ErrStateChanged
		}
		err = move(tx, m, to, at, map[string]any{"status": status, "request_id": req.RequestID,
			"user_id": req.UserID, "project_id": req.ProjectID})
		if errors.Is(err, errMoved) {
			return ErrStateChanged
		}
		if err != nil {
			return err
		}
		if to == StepConfirming {
			if err := moveVolumes(tx, m); err != nil {
				return err
			}
		}
		if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: apiAction, RequestID: req.RequestID,
			UserID: req.UserID, ProjectID: req.ProjectID, StartTime: at, UpdatedAt: at}).Error; err != nil {
			return fmt.Errorf("record %s of %s: %w", apiAction, inst.ID, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slog.Info("cold migration "+apiAction, "migration", m.UUID, "instance", inst.ID, "step", m.Step,
		"source", m.SourceCompute, "target", m.DestCompute)
	return m, nil
}

// confirm: the server keeps running on the target and is back in the
// state it was migrated from at once (the API answers 204); the engine
// then removes the source's copy, the tag and the source claim.
func confirm(ctx context.Context, st *store.Store, inst *store.Instance, req Request) (*store.Migration, error) {
	return settle(ctx, st, inst, req, lifecycle.ActConfirmResize, "confirmResize",
		func(m *store.Migration, _ lifecycle.TaskState) instance.Change {
			return instance.Change{VM: lifecycle.ResizeOutcome(m.SourceVMState), Task: lifecycle.NoTask,
				Set: instance.ForgetOldFlavor()}
		}, StepConfirming, lifecycle.MigrationConfirming)
}

// revert: task resize_reverting (REVERT_RESIZE) until the engine has
// removed the target's copy and restarted the source.
func revert(ctx context.Context, st *store.Store, inst *store.Instance, req Request) (*store.Migration, error) {
	return settle(ctx, st, inst, req, lifecycle.ActRevertResize, "revertResize",
		func(_ *store.Migration, task lifecycle.TaskState) instance.Change {
			return instance.Change{Task: task}
		}, StepRevertTarget, lifecycle.MigrationReverting)
}
