// Package migrate moves a server to another host cold, the way Capsule's
// production lesson says: docker commit → push to the private registry →
// pull on the target, keeping the server's UUID, ports (IP, MAC, VLAN)
// and limits. A cross-host resize is the same workflow with a new flavor.
//
// The workflow is an explicit step machine (Step) persisted on the
// store.Migration row before each step's work is sent to an agent, so a
// restarted conductor resumes or rolls back from the row alone; agents'
// work is idempotent and each report names the step it answers, so a
// stale or duplicate report changes nothing. The API starts, confirms and
// reverts migrations with the functions of this file; the conductor runs
// the Engine.
package migrate

import (
	"context"
	"errors"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/store"
)

// KindMigrationAdvance (conductor queue) asks the engine to carry a
// migration's current step out now; the engine's periodic pass would do
// it anyway, so losing one only delays the migration.
const KindMigrationAdvance = "migration_advance"

// Advance is the body of a KindMigrationAdvance message.
type Advance struct {
	MigrationID uint `json:"migration_id"`
}

// ErrStateChanged: the instance left the state the caller saw (409).
var ErrStateChanged = errors.New("the instance's state changed meanwhile")

// ErrNoPending: the instance has no cold migration awaiting a confirm or
// revert (the caller falls back to a live resize's confirm/revert).
var ErrNoPending = errors.New("no cold migration awaits confirmation")

// Request is who asks, and when.
type Request struct {
	RequestID string
	UserID    string
	ProjectID string
	Now       time.Time
	// Guard, when set, runs first in the transaction that records the
	// request (a growing resize's or a shrinking resize's revert's quota
	// check); its error is returned as it is and nothing is recorded.
	Guard store.Guard
}

// BeginRequest starts a cold migration of Instance (as the caller loaded
// it): to Host when set (validated by the caller: exists, is a compute
// host, is not the source), else where the scheduler finds room; with
// NewFlavor set it is a resize onto another host (the instance's flavor
// copy is swapped now and the old one kept, as for a live resize).
type BeginRequest struct {
	Request
	Instance  *store.Instance
	NewFlavor *store.Flavor // nil: a migration
	Host      string        // requested target host, "" = the scheduler's choice
	Action    string        // the instance action to record: "migrate" or "resize"
}

// Begin records the migration (Step StepScheduling, status pre-migrating),
// puts the instance in resize_prep and records the instance action, in one
// transaction guarded on the instance's state (ErrStateChanged, or a
// *lifecycle.ConflictError when its state forbids it); then the caller
// calls Kick. Nothing is claimed yet: the engine's scheduling step does it.
func Begin(ctx context.Context, st *store.Store, req BeginRequest) (*store.Migration, error) {
	return begin(ctx, st, req)
}

// Pending returns the cold migration of instanceID that waits in
// VERIFY_RESIZE for a confirm or revert, or ErrNoPending.
func Pending(ctx context.Context, st *store.Store, instanceID string) (*store.Migration, error) {
	return pending(ctx, st, instanceID)
}

// Confirm confirms inst's pending cold migration: the instance goes back
// to the vm_state it was migrated from at once (no task: the API answers
// 204 as Nova does), the confirmResize action is recorded, and the
// migration moves to step confirming, where the engine removes the source
// container and the registry tag and drops the source claim in the
// background.
func Confirm(ctx context.Context, st *store.Store, inst *store.Instance, req Request) (*store.Migration, error) {
	return confirm(ctx, st, inst, req)
}

// Revert starts reverting inst's pending cold migration (task
// resize_reverting, step revert_target): the engine removes the target
// container, restarts the source, and gives the old flavor back. The
// caller's req.Guard (the quota check of a revert that grows the server)
// runs first in the same transaction.
func Revert(ctx context.Context, st *store.Store, inst *store.Instance, req Request) (*store.Migration, error) {
	return revert(ctx, st, inst, req)
}

// Kick asks the conductor to advance migration id now.
func Kick(ctx context.Context, b bus.Bus, id uint) error {
	m, err := bus.NewMessage(KindMigrationAdvance, Advance{MigrationID: id})
	if err != nil {
		return err
	}
	return b.Publish(ctx, bus.ConductorQueue, m)
}
