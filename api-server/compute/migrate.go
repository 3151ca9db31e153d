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
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/migrate"
	"github.com/capsule-cloud/capsule/store"
)

// Cold migration (and a resize onto another host) is carried out by
// package migrate's engine in the conductor. The API validates the
// request, starts the migration with migrate.Begin (which flips the state
// to RESIZE before the 202, as OSC's --wait needs) and kicks the engine.

// migrator is package migrate's API as the handlers use it; behind an
// interface so tests can see which calls a request makes without running
// the conductor's engine.
type migrator interface {
	Begin(ctx context.Context, st *store.Store, req migrate.BeginRequest) (*store.Migration, error)
	Pending(ctx context.Context, st *store.Store, instanceID string) (*store.Migration, error)
	Confirm(ctx context.Context, st *store.Store, inst *store.Instance, req migrate.Request) (*store.Migration, error)
	Revert(ctx context.Context, st *store.Store, inst *store.Instance, req migrate.Request) (*store.Migration, error)
	Kick(ctx context.Context, b bus.Bus, id uint) error
}

// engineMigrator calls package migrate.
type engineMigrator struct{}

func (engineMigrator) Begin(ctx context.Context, st *store.Store, req migrate.BeginRequest) (*store.Migration, error) {
	return migrate.Begin(ctx, st, req)
}

func (engineMigrator) Pending(ctx context.Context, st *store.Store, instanceID string) (*store.Migration, error) {
	return migrate.Pending(ctx, st, instanceID)
}

func (engineMigrator) Confirm(ctx context.Context, st *store.Store, inst *store.Instance, req migrate.Request) (*store.Migration, error) {
	return migrate.Confirm(ctx, st, inst, req)
}

func (engineMigrator) Revert(ctx context.Context, st *store.Store, inst *store.Instance, req migrate.Request) (*store.Migration, error) {
	return migrate.Revert(ctx, st, inst, req)
}

func (engineMigrator) Kick(ctx context.Context, b bus.Bus, id uint) error {
	return migrate.Kick(ctx, b, id)
}

// migrateRequest is who asks, for package migrate.
func (s *Service) migrateRequest(w http.ResponseWriter, r *http.Request) migrate.Request {
	creds := auth.FromContext(r.Context())
	return migrate.Request{RequestID: requestID(w), UserID: creds.UserID, ProjectID: creds.ProjectID, Now: s.opts.Now()}
}

// migrateHostOf reads the migrate action's body: null, {} or, from 2.56,
// {"host": "h"|null}. Anything else is a 400 in the words of Nova's
// schema (below 2.56 "host" is not a property).
func migrateHostOf(w http.ResponseWriter, v apiVersion, arg json.RawMessage) (string, bool) {
	if len(arg) == 0 || string(arg) == "null" {
		return "", true
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(arg, &body); err != nil || body == nil {
		writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute migrate. Value: %s. %s is not of type 'object', 'null'", arg, arg))
		return "", false
	}
	host := ""
	for k, raw := range body {
		if k != "host" || !v.AtLeast(56) {
			writeFault(w, errdefs.InvalidArgumentf(
				"Invalid input for field/attribute migrate. Value: %s. Additional properties are not allowed ('%s' was unexpected)", arg, k))
			return "", false
		}
		if string(raw) == "null" {
			continue
		}
		if err := json.Unmarshal(raw, &host); err != nil || host == "" || len(host) > 255 {
			writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute host. Value: %s. It must be a host name of 1 to 255 characters or null", raw))
			return "", false
		}
	}
	return host, true
}

// migrateServer is the migrate action (admin): a cold migration to host,
// or where the scheduler finds room.
func (s *Service) migrateServer(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	if !auth.FromContext(r.Context()).IsAdmin() {
		writeFault(w, errdefs.Forbidden("Policy doesn't allow os_compute_api:os-migrate-server:migrate to be performed."))
		return
	}
	host, ok := migrateHostOf(w, versionOf(r.Context()), arg)
	if !ok {
		return
	}
	if _, ok := beginOnHost(w, inst, lifecycle.ActMigrate, "migrate"); !ok {
		return
	}
	if host != "" && !s.checkTargetHost(w, r, inst, host) {
		return
	}
	s.beginCold(w, r, inst, nil, host, "migrate")
}

// checkTargetHost validates a host an admin named: it must be a compute
// host other than the server's, enabled and up (the engine would only
// fail later, after the server was stopped, on one that is not).
func (s *Service) checkTargetHost(w http.ResponseWriter, r *http.Request, inst *store.Instance, host string) bool {
	var svc store.Service
	err := s.st.WithContext(r.Context()).Where("host = ? AND binary_name = ?", host, store.ComputeBinary).First(&svc).Error
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		writeFault(w, errdefs.InvalidArgumentf("Compute host %s could not be found.", host))
		return false
	case err != nil:
		s.log.Error("look up migration target", "host", host, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return false
	}
	if host == inst.Host {
		writeFault(w, errdefs.InvalidArgumentf("Cannot migrate to the host where the server exists (%s): choose another host.", host))
		return false
	}
	if svc.Disabled {
		reason := ""
		if svc.DisabledReason != nil && *svc.DisabledReason != "" {
			reason = " (" + *svc.DisabledReason + ")"
		}
		writeFault(w, errdefs.InvalidArgumentf("Compute host %s is disabled%s: enable it or choose another host.", host, reason))
		return false
	}
	if !s.serviceUp(&svc) {
		writeFault(w, errdefs.InvalidArgumentf("Compute host %s is down: choose another host.", host))
		return false
	}
	return true
}

// beginCold starts a cold migration of inst (a resize onto another host
// when flavor is set) and kicks the engine; 202. apiName is the action as
// the client named it, for the 409's wording.
func (s *Service) beginCold(w http.ResponseWriter, r *http.Request, inst *store.Instance, flavor *store.Flavor, host, apiName string) {
	ctx := r.Context()
	req := migrate.BeginRequest{Request: s.migrateRequest(w, r), Instance: inst, NewFlavor: flavor, Host: host, Action: apiName}
	if flavor != nil {
		req.Guard = s.resizeQuota(inst, flavor)
	}
	m, err := s.mig.Begin(ctx, s.st, req)
	if s.migrateFailed(w, inst, apiName, err) {
		return
	}
	s.kick(ctx, inst, m)
	noContent(w, http.StatusAccepted)
}

// migrateFailed writes the error response for a refused migrate call
// (409 for a state conflict) and reports whether there was one.
func (s *Service) migrateFailed(w http.ResponseWriter, inst *store.Instance, apiName string, err error) bool {
	var conflict *lifecycle.ConflictError
	switch {
	case err == nil:
		return false
	case errors.As(err, &conflict):
		stateConflict(w, &store.Instance{ID: inst.ID, VMState: conflict.VM, TaskState: conflict.Task}, apiName)
	case errors.Is(err, migrate.ErrStateChanged):
		writeFault(w, errdefs.Conflictf("Cannot '%s' instance %s: its state changed meanwhile", apiName, inst.ID))
	case errdefs.IsQuotaExceeded(err):
		writeFault(w, err)
	case errors.Is(err, migrate.ErrNoPending):
		writeFault(w, errdefs.Conflictf("Cannot '%s' instance %s: no migration awaits confirmation", apiName, inst.ID))
	default:
		s.log.Error("cold migration", "action", apiName, "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
	}
	return true
}

// kick asks the engine to carry m's step out now. A lost kick only delays
// the migration (the engine's periodic pass picks it up), so it is logged,
// not returned.
func (s *Service) kick(ctx context.Context, inst *store.Instance, m *store.Migration) {
	if m == nil {
		return
	}
	if err := s.mig.Kick(context.WithoutCancel(ctx), s.bus, m.ID); err != nil {
		s.log.Warn("kick migration", "instance", inst.ID, "migration", m.ID, "error", err)
	}
}

// finishCold confirms (or reverts) inst's cold migration awaiting
// confirmation, if it has one; false when it has none, and the live
// resize's path then runs.
func (s *Service) finishCold(w http.ResponseWriter, r *http.Request, inst *store.Instance, confirm bool) bool {
	ctx := r.Context()
	if _, err := s.mig.Pending(ctx, s.st, inst.ID); errors.Is(err, migrate.ErrNoPending) {
		return false
	} else if err != nil {
		s.log.Error("pending cold migration", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return true
	}
	act, apiName, finish, status := lifecycle.ActRevertResize, "revertResize", s.mig.Revert, http.StatusAccepted
	if confirm {
		act, apiName, finish, status = lifecycle.ActConfirmResize, "confirmResize", s.mig.Confirm, http.StatusNoContent
	}
	if _, err := lifecycle.Begin(act, inst.VMState, inst.TaskState); err != nil {
		stateConflict(w, inst, apiName)
		return true
	}
	req := s.migrateRequest(w, r)
	if !confirm {
		req.Guard = s.revertQuota(inst)
	}
	m, err := finish(ctx, s.st, inst, req)
	if s.migrateFailed(w, inst, apiName, err) {
		return true
	}
	s.kick(ctx, inst, m)
	noContent(w, status)
	return true
}

// migrateLive refuses os-migrateLive: a container's memory cannot be
// moved while it runs.
func (s *Service) migrateLive(w http.ResponseWriter, r *http.Request) {
	if !auth.FromContext(r.Context()).IsAdmin() {
		writeFault(w, errdefs.Forbidden("Policy doesn't allow os_compute_api:os-migrate-server:migrate_live to be performed."))
		return
	}
	writeFault(w, errdefs.InvalidArgument("Migration pre-check error: live migration is not supported by Capsule's "+
		"container servers; use a cold migration (the migrate action, or `capsule server migrate`), which keeps the "+
		"server's id, addresses and data."))
}

// terminalMigration are the statuses of a migration that is over.
var terminalMigration = []lifecycle.MigrationStatus{lifecycle.MigrationConfirmed, lifecycle.MigrationReverted, lifecycle.MigrationError,
	"failed", "done", "cancelled", "completed"}

// serverMigrationView is a migration as os-server-migrations shows it.
// Containers move no memory; the disk figures are the image's: pushed
// bytes while the source exports, pulled bytes while the target imports.
func serverMigrationView(v apiVersion, m *store.Migration) map[string]any {
	processed := m.PushedBytes
	switch m.Status {
	case lifecycle.MigrationPreMigrating:
		processed = 0
	case lifecycle.MigrationMigrating:
	default:
		processed = m.PulledBytes
	}
	// The image's size is known once the export pushed it all; until
	// then the total is 0 (unknown), as Nova reports an unknown total.
	total, remaining := m.ImageBytes, m.ImageBytes-processed
	if remaining < 0 {
		remaining = 0
	}
	out := map[string]any{"id": m.ID, "server_uuid": m.InstanceID, "status": m.Status,
		"source_compute": m.SourceCompute, "source_node": m.SourceNode,
		"dest_compute": m.DestCompute, "dest_host": m.DestHost, "dest_node": m.DestNode,
		"created_at": m.CreatedAt.UTC().Format(actionFmt), "updated_at": m.UpdatedAt.UTC().Format(actionFmt),
		"memory_total_bytes": 0, "memory_processed_bytes": 0, "memory_remaining_bytes": 0,
		"disk_total_bytes": total, "disk_processed_bytes": processed, "disk_remaining_bytes": remaining}
	if v.AtLeast(59) {
		out["uuid"] = m.UUID
	}
	if v.AtLeast(80) {
		out["user_id"], out["project_id"] = m.UserID, m.ProjectID
	}
	return out
}

// listServerMigrations is GET /servers/{id}/migrations (2.23, admin): the
// server's migrations in progress, a cold one's included.
func (s *Service) listServerMigrations(w http.ResponseWriter, r *http.Request) {
	v := versionOf(r.Context())
	if !v.AtLeast(23) {
		writeFault(w, errdefs.NotFound("The resource could not be found."))
		return
	}
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	var ms []store.Migration
	err := s.st.WithContext(r.Context()).Where("instance_id = ? AND status NOT IN ?", inst.ID, terminalMigration).
		Order("created_at DESC").Order("id DESC").Find(&ms).Error
	if err != nil {
		s.log.Error("list server migrations", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	out := make([]map[string]any, 0, len(ms))
	for i := range ms {
		out = append(out, serverMigrationView(v, &ms[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"migrations": out})
}

// showServerMigration is GET /servers/{id}/migrations/{mid} (2.23, admin).
func (s *Service) showServerMigration(w http.ResponseWriter, r *http.Request) {
	v := versionOf(r.Context())
	if !v.AtLeast(23) {
		writeFault(w, errdefs.NotFound("The resource could not be found."))
		return
	}
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	mid := r.PathValue("mid")
	notFound := fmt.Sprintf("In-progress migration %s is not found for server %s.", mid, inst.ID)
	// An id the database's integers cannot hold (2^63 and up) is as
	// unknown as any other: SQLite refuses a uint64 with the high bit set.
	n, err := strconv.ParseInt(mid, 10, 64)
	if err != nil || n <= 0 {
		writeFault(w, errdefs.NotFound(notFound))
		return
	}
	var m store.Migration
	err = s.st.WithContext(r.Context()).Where("id = ? AND instance_id = ? AND status NOT IN ?", n, inst.ID, terminalMigration).First(&m).Error
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		writeFault(w, errdefs.NotFound(notFound))
		return
	case err != nil:
		s.log.Error("show server migration", "instance", inst.ID, "migration", mid, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"migration": serverMigrationView(v, &m)})
}
