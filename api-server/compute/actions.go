package compute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// notYet are Nova actions Capsule knows but does not offer yet; they get a
// clear error instead of "no such action".
var notYet = map[string]string{
	"trigger_crash_dump": "crash dumps", "forceDelete": "soft delete",
	"restore": "soft delete",
}

// consoleActions are the pre-2.6 console URL actions.
var consoleActions = map[string]bool{"os-getSerialConsole": true, "os-getVNCConsole": true, "os-getSPICEConsole": true,
	"os-getRDPConsole": true}

func (s *Service) serverAction(w http.ResponseWriter, r *http.Request) {
	var body map[string]json.RawMessage
	if !decodeBody(w, r, &body) {
		return
	}
	if len(body) != 1 {
		writeFault(w, errdefs.InvalidArgument("Malformed request body: exactly one action is expected"))
		return
	}
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	var name string
	var arg json.RawMessage
	for k, v := range body {
		name, arg = k, v
	}
	creds := auth.FromContext(r.Context())
	// Reading a console does not change the server: a lock does not
	// stop it (Nova's console calls do not check the lock).
	readsConsole := name == "os-getConsoleOutput" || consoleActions[name]
	if inst.Locked && !creds.IsAdmin() && name != "unlock" && !readsConsole {
		writeFault(w, errdefs.Conflictf("Instance %s is locked", inst.ID))
		return
	}
	switch name {
	case "createBackup", "rebuild", "os-migrateLive":
		if err := s.refuseVolumeBacked(r.Context(), inst, name); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	switch name {
	case "changePassword":
		s.changePassword(w, r, inst, arg)
	case "os-start":
		s.simpleAction(w, r, inst, lifecycle.ActStart, "start")
	case "os-stop":
		s.simpleAction(w, r, inst, lifecycle.ActStop, "stop")
	case "pause":
		s.simpleAction(w, r, inst, lifecycle.ActPause, "pause")
	case "unpause":
		s.simpleAction(w, r, inst, lifecycle.ActUnpause, "unpause")
	case "suspend":
		s.simpleAction(w, r, inst, lifecycle.ActSuspend, "suspend")
	case "resume":
		s.simpleAction(w, r, inst, lifecycle.ActResume, "resume")
	case "reboot":
		var rb struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(arg, &rb); err != nil || (!strings.EqualFold(rb.Type, "SOFT") && !strings.EqualFold(rb.Type, "HARD")) {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute type. Value must be SOFT or HARD."))
			return
		}
		act := lifecycle.ActReboot
		if strings.EqualFold(rb.Type, "HARD") {
			act = lifecycle.ActRebootHard
		}
		s.simpleAction(w, r, inst, act, "reboot")
	case "lock", "unlock":
		reason, err := lockReason(name, arg, versionOf(r.Context()))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.lockAction(w, r, inst, name == "lock", reason)
	case "os-resetState":
		s.resetState(w, r, inst, arg)
	case "os-getConsoleOutput":
		s.consoleOutput(w, r, inst, arg)
	case "os-getSerialConsole", "os-getVNCConsole", "os-getSPICEConsole", "os-getRDPConsole":
		s.consoleAction(w, r, inst, name, arg)
	case "resize":
		s.resizeServer(w, r, inst, arg)
	case "confirmResize":
		s.confirmResize(w, r, inst)
	case "revertResize":
		s.revertResize(w, r, inst)
	case "createImage":
		s.createImage(w, r, inst, arg)
	case "createBackup":
		s.createBackup(w, r, inst, arg)
	case "migrate":
		s.migrateServer(w, r, inst, arg)
	case "os-migrateLive":
		s.migrateLive(w, r)
	case "evacuate":
		s.evacuateServer(w, r, inst, arg)
	case "rebuild":
		s.rebuildServer(w, r, inst, arg)
	case "shelve":
		s.shelveServer(w, r, inst)
	case "shelveOffload":
		s.shelveOffload(w, r, inst)
	case "unshelve":
		s.unshelveServer(w, r, inst, arg)
	case "addSecurityGroup", "removeSecurityGroup":
		s.securityGroupAction(w, r, inst, arg, name == "addSecurityGroup")
	case "rescue":
		s.rescueServer(w, r, inst, arg)
	case "unrescue":
		s.simpleAction(w, r, inst, lifecycle.ActUnrescue, "unrescue")
	default:
		if feature, known := notYet[name]; known {
			writeFault(w, errdefs.InvalidArgumentf("Action '%s' (%s) is not supported by this Capsule release yet.", name, feature))
			return
		}
		writeFault(w, errdefs.InvalidArgumentf("There is no such action: %s", name))
	}
}

func (s *Service) simpleAction(w http.ResponseWriter, r *http.Request, inst *store.Instance, act lifecycle.Action, apiName string) {
	if err := s.startAction(w, r, inst, act, apiName); err != nil {
		return
	}
	noContent(w, http.StatusAccepted)
}

// lockAction locks or unlocks inst with Nova's locked_by rules (2.73's
// semantics at every microversion): a lock records whether the server's
// own project ("owner") or an admin of another project ("admin") set it,
// and only an admin may lift an admin's lock (Nova's unlock_override
// policy, 403 otherwise).
func (s *Service) lockAction(w http.ResponseWriter, r *http.Request, inst *store.Instance, lock bool, reason string) {
	creds := auth.FromContext(r.Context())
	act := "unlock"
	if lock {
		act = "lock"
	}
	lockedBy := ""
	switch {
	case lock && inst.Locked && lockerOf(creds, inst) == "owner":
		// Nova: the owner re-locking a locked server changes nothing (an
		// admin's lock stays an admin's, with its reason).
		lockedBy, reason = inst.LockedBy, inst.LockedReason
	case lock:
		lockedBy = lockerOf(creds, inst)
	case inst.Locked && inst.LockedBy != "" && inst.LockedBy != lockerOf(creds, inst) && !creds.IsAdmin():
		writeFault(w, errdefs.Forbidden("Policy doesn't allow os_compute_api:os-lock-server:unlock:unlock_override to be performed."))
		return
	}
	// The flag and the action record go together: a failed lock must not
	// show up in os-instance-actions.
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&store.Instance{}).Where("id = ?", inst.ID).
			Updates(map[string]any{"locked": lock, "locked_by": lockedBy, "locked_reason": reason}).Error; err != nil {
			return fmt.Errorf("set locked=%v on %s: %w", lock, inst.ID, err)
		}
		now := s.opts.Now()
		return tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: act, RequestID: requestID(w),
			UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error
	})
	if err != nil {
		s.log.Error("lock action", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	noContent(w, http.StatusAccepted)
}

// lockReason reads the lock action's body: from 2.73 null or
// {"locked_reason": a string of at most 255 characters} and nothing else
// (unlock takes null); below 2.73 the body is not looked at, as Nova's.
func lockReason(action string, arg json.RawMessage, v apiVersion) (string, error) {
	if !v.AtLeast(73) || len(arg) == 0 || string(arg) == "null" {
		return "", nil
	}
	var body map[string]json.RawMessage
	if json.Unmarshal(arg, &body) != nil || body == nil {
		return "", errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %s is not of type 'object', 'null'", action, arg)
	}
	for k := range body {
		if k != "locked_reason" || action != "lock" {
			return "", errdefs.InvalidArgumentf("Additional properties are not allowed ('%s' was unexpected)", k)
		}
	}
	raw, ok := body["locked_reason"]
	if !ok {
		return "", nil
	}
	var reason string
	if json.Unmarshal(raw, &reason) != nil || utf8.RuneCountInString(reason) > 255 {
		return "", errdefs.InvalidArgument("Invalid input for field/attribute locked_reason. Value must be a string of at most 255 characters.")
	}
	return reason, nil
}

// lockerOf is Nova's locked_by for a lock c would set on inst: "owner"
// from the server's own project, "admin" from any other.
func lockerOf(c *auth.Credentials, inst *store.Instance) string {
	if c.ProjectID == inst.ProjectID {
		return "owner"
	}
	return "admin"
}

// resetState is the admin's way out of a stuck state; synchronous, as
// Tempest reads the status right after.
func (s *Service) resetState(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	if !auth.FromContext(r.Context()).IsAdmin() {
		writeFault(w, errdefs.Forbidden("Policy doesn't allow os_compute_api:os-admin-actions:reset_state to be performed."))
		return
	}
	var rs struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal(arg, &rs); err != nil || (rs.State != "error" && rs.State != "active") {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute state. Value must be 'error' or 'active'."))
		return
	}
	err := instance.ResetState(s.st.WithContext(r.Context()), inst.ID, lifecycle.VMState(rs.State), s.opts.Now())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	noContent(w, http.StatusAccepted)
}

var consoleCtl = regexp.MustCompile("[\x00-\x08\x0B-\x1F]")

func (s *Service) consoleOutput(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	lines := -1
	var opt struct {
		Length any `json:"length"`
	}
	if len(arg) > 0 && string(arg) != "null" {
		if err := json.Unmarshal(arg, &opt); err != nil {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute os-getConsoleOutput."))
			return
		}
	}
	switch l := opt.Length.(type) {
	case nil:
	case float64:
		lines = int(l)
	case string:
		n, err := strconv.Atoi(l)
		if err != nil {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute length. Value: "+l+" is not an integer."))
			return
		}
		lines = n
	default:
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute length."))
		return
	}
	if lines < -1 {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute length. Value must be >= -1."))
		return
	}
	if inst.Host == "" || inst.VMState == lifecycle.Building {
		writeFault(w, errdefs.Conflictf("Instance %s is not ready yet.", inst.ID))
		return
	}
	if lines == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"output": ""})
		return
	}
	// Ask for one line more than wanted, then cut as Nova does, counting
	// "\n"-separated segments (a log ending in a newline has an empty last
	// segment; clients count segments, not lines).
	want := lines
	if want > 0 {
		want++
	}
	msg, err := bus.NewMessage(protocol.KindConsoleOutput, protocol.ConsoleOutputRequest{InstanceID: inst.ID, Lines: want})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.CallTimeout)
	defer cancel()
	var reply protocol.ConsoleOutputReply
	if err := s.bus.Call(ctx, bus.ComputeQueue(inst.Host), msg, &reply); err != nil {
		var remote *bus.RemoteError
		if errors.As(err, &remote) {
			s.fail(w, r, errdefs.NotFound("Guest does not have a console available: "+remote.Message))
			return
		}
		s.log.Warn("console output call", "instance", inst.ID, "host", inst.Host, "error", err)
		s.fail(w, r, errdefs.Unavailablef("The compute host %s did not answer in time.", inst.Host))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"output": tailSegments(consoleCtl.ReplaceAllString(reply.Output, ""), lines)})
}

// tailSegments keeps the last n "\n"-separated segments (all when n < 0),
// as nova.compute.manager._tail_log does.
func tailSegments(log string, n int) string {
	if n < 0 {
		return log
	}
	segs := strings.Split(log, "\n")
	if n < len(segs) {
		segs = segs[len(segs)-n:]
	}
	return strings.Join(segs, "\n")
}

// Instance actions.

func (s *Service) actionView(r *http.Request, a *store.InstanceAction, withEvents bool) map[string]any {
	v := versionOf(r.Context())
	out := map[string]any{"action": a.Action, "instance_uuid": a.InstanceID, "request_id": a.RequestID,
		"user_id": a.UserID, "project_id": a.ProjectID, "start_time": a.StartTime.UTC().Format(actionFmt), "message": a.Message}
	if v.AtLeast(58) {
		out["updated_at"] = a.UpdatedAt.UTC().Format(actionFmt)
	}
	if withEvents {
		creds := auth.FromContext(r.Context())
		evs := []map[string]any{}
		for _, e := range a.Events {
			ev := map[string]any{"event": e.Event, "start_time": e.StartTime.UTC().Format(actionFmt),
				"finish_time": nil, "result": nil}
			if e.FinishTime != nil {
				ev["finish_time"] = e.FinishTime.UTC().Format(actionFmt)
			}
			if e.Result != "" {
				ev["result"] = e.Result
			}
			if creds.IsAdmin() {
				var tb any
				if e.Traceback != "" {
					tb = e.Traceback
				}
				ev["traceback"] = tb
				// 2.62: the host to admins, its opaque id to all.
				if v.AtLeast(62) {
					ev["host"] = e.Host
				}
			}
			if v.AtLeast(62) {
				ev["hostId"] = hostID(a.ProjectID, e.Host)
			}
			// 2.84: why a failed event failed, to members too (Nova's
			// events:details policy is the project reader's).
			if v.AtLeast(84) {
				var details any
				if e.Details != "" {
					details = e.Details
				}
				ev["details"] = details
			}
			evs = append(evs, ev)
		}
		out["events"] = evs
	}
	return out
}

func (s *Service) listInstanceActions(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServerAny(w, r, versionOf(r.Context()).AtLeast(21))
	if !ok {
		return
	}
	v := versionOf(r.Context())
	since, before, err := changesWindow(r.URL.Query(), v, v.AtLeast(58))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var acts []store.InstanceAction
	db := whereChanged(s.st.WithContext(r.Context()).Where("instance_id = ?", inst.ID), since, before)
	if err := db.Order("start_time DESC").Order("id DESC").Find(&acts).Error; err != nil {
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	items := make([]any, 0, len(acts))
	for i := range acts {
		items = append(items, s.actionView(r, &acts[i], false))
	}
	writeJSON(w, http.StatusOK, map[string]any{"instanceActions": items})
}

func (s *Service) showInstanceAction(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServerAny(w, r, versionOf(r.Context()).AtLeast(21))
	if !ok {
		return
	}
	var a store.InstanceAction
	err := s.st.WithContext(r.Context()).Preload("Events").Where("instance_id = ? AND request_id = ?", inst.ID, r.PathValue("req")).First(&a).Error
	if err != nil {
		writeFault(w, errdefs.NotFoundf("Action for request_id %s on instance %s not found", r.PathValue("req"), inst.ID))
		return
	}
	creds := auth.FromContext(r.Context())
	withEvents := creds.IsAdmin() || versionOf(r.Context()).AtLeast(51)
	writeJSON(w, http.StatusOK, map[string]any{"instanceAction": s.actionView(r, &a, withEvents)})
}

// Metadata.

func (s *Service) getMetadata(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"metadata": jsonMap(inst.Metadata)})
}

// saveMetadata applies change to inst's metadata under the server's row
// lock and writes the error answer when it fails: a result over the
// metadata_items quota of the caller's project (and user) is Nova's 403
// unless shrink (a delete, which Nova never refuses).
func (s *Service) saveMetadata(w http.ResponseWriter, r *http.Request, inst *store.Instance, shrink bool,
	change func(m map[string]string) error) (map[string]string, bool) {
	max := -1
	if !shrink {
		var ok bool
		if max, ok = s.metadataLimit(w, r); !ok {
			return nil, false
		}
	}
	m, err := s.st.UpdateMetadata(r.Context(), inst.ID, s.opts.Now(), func(m map[string]string) (map[string]string, error) {
		if err := change(m); err != nil {
			return nil, err
		}
		if max >= 0 && len(m) > max {
			return nil, metadataOverQuota(max)
		}
		return m, nil
	})
	if err != nil {
		s.fail(w, r, err)
		return nil, false
	}
	return m, true
}

func decodeStringMap(w http.ResponseWriter, raw map[string]any, field string) (map[string]string, bool) {
	out := map[string]string{}
	for k, v := range raw {
		str, ok := v.(string)
		if !ok || k == "" || len(k) > 255 || len(str) > 255 {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute "+field+". Keys and values must be strings of 1-255 characters."))
			return nil, false
		}
		out[k] = str
	}
	return out, true
}

func (s *Service) setMetadata(replace bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		inst, ok := s.loadServer(w, r)
		if !ok {
			return
		}
		var req struct {
			Metadata map[string]any `json:"metadata"`
		}
		if !decodeBody(w, r, &req) {
			return
		}
		if req.Metadata == nil {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute metadata. Value: 'metadata' is a required property"))
			return
		}
		in, ok := decodeStringMap(w, req.Metadata, "metadata")
		if !ok {
			return
		}
		m, ok := s.saveMetadata(w, r, inst, false, func(m map[string]string) error {
			if replace {
				clear(m)
			}
			for k, v := range in {
				m[k] = v
			}
			return nil
		})
		if ok {
			writeJSON(w, http.StatusOK, map[string]any{"metadata": m})
		}
	}
}

func (s *Service) getMetadataItem(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	key := r.PathValue("key")
	v, found := jsonMap(inst.Metadata)[key]
	if !found {
		writeFault(w, errdefs.NotFound("Metadata item was not found"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"meta": map[string]string{key: v}})
}

func (s *Service) putMetadataItem(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	var req struct {
		Meta map[string]any `json:"meta"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	key := r.PathValue("key")
	in, ok := decodeStringMap(w, req.Meta, "meta")
	if !ok {
		return
	}
	if _, found := in[key]; !found || len(in) != 1 {
		writeFault(w, errdefs.InvalidArgument("Request body and URI mismatch"))
		return
	}
	_, ok = s.saveMetadata(w, r, inst, false, func(m map[string]string) error {
		m[key] = in[key]
		return nil
	})
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"meta": in})
	}
}

func (s *Service) deleteMetadataItem(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	key := r.PathValue("key")
	_, ok = s.saveMetadata(w, r, inst, true, func(m map[string]string) error {
		if _, found := m[key]; !found {
			return errdefs.NotFound("Metadata item was not found")
		}
		delete(m, key)
		return nil
	})
	if ok {
		noContent(w, http.StatusNoContent)
	}
}
