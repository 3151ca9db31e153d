package conductor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm/clause"

	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// onHostEvent records an event an agent raised: as a host event
// (os-host-events) and, for a server, as an instance action of that
// server, so `openstack server event list` shows its OOM kills and
// alarms. The event's id makes both idempotent: a redelivered message
// records nothing twice, and one that failed half-way completes.
func (c *Conductor) onHostEvent(ctx context.Context, ev protocol.HostEvent) error {
	if ev.ID == "" || ev.Host == "" || ev.Kind == "" {
		// A malformed message: retrying it would not help.
		c.log.Warn("host event without id, host or kind dropped", "event", ev)
		return nil
	}
	at := ev.At.UTC().Truncate(time.Microsecond) // what the database keeps
	if ev.At.IsZero() {
		at = c.now()
	}
	var inst *store.Instance
	if ev.InstanceID != "" {
		var err error
		inst, err = c.loadInstance(ctx, ev.InstanceID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			inst = nil // purged since (or an orphan): the host event still counts
		case err != nil:
			return err
		case ev.ProjectID == "":
			ev.ProjectID = inst.ProjectID
		}
	}
	row := store.HostEvent{UUID: ev.ID, Host: ev.Host, InstanceID: ev.InstanceID, ProjectID: ev.ProjectID,
		Kind: string(ev.Kind), Severity: ev.Severity, Message: ev.Message, Value: ev.Value, Threshold: ev.Threshold,
		At: at, CreatedAt: c.now()}
	// The server's instance action goes first: once the host event is
	// listed, its action and event (with its result) are there too. Every
	// write is idempotent, so a redelivery after a crash in between only
	// adds what is missing.
	if inst != nil {
		if err := c.recordEventAction(ctx, inst, ev, at); err != nil {
			return err
		}
	}
	db := c.st.WithContext(ctx)
	if err := db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "uuid"}}, DoNothing: true}).Create(&row).Error; err != nil {
		return fmt.Errorf("record host event %s (%s on %s): %w", ev.ID, ev.Kind, ev.Host, err)
	}
	log := c.log.With("event", ev.ID, "kind", ev.Kind, "severity", ev.Severity, "host", ev.Host)
	if inst == nil {
		log.Info("host event recorded", "message", ev.Message)
		return nil
	}
	log.Info("server event recorded", "instance", inst.ID, "message", ev.Message)
	return nil
}

// recordEventAction records ev as an instance action of inst ("oom_kill",
// request req-<event id>, by the instance's user and project) with one
// event "capsule_<kind>" whose result is Error for warnings and critical
// events and whose traceback is the message.
func (c *Conductor) recordEventAction(ctx context.Context, inst *store.Instance, ev protocol.HostEvent, at time.Time) error {
	reqID := "req-" + ev.ID
	db := c.st.WithContext(ctx)
	var n int64
	if err := db.Model(&store.InstanceAction{}).Where("instance_id = ? AND request_id = ?", inst.ID, reqID).Count(&n).Error; err != nil {
		return fmt.Errorf("look up action %s of %s: %w", reqID, inst.ID, err)
	}
	if n == 0 {
		a := store.InstanceAction{InstanceID: inst.ID, Action: string(ev.Kind), RequestID: reqID, UserID: inst.UserID,
			ProjectID: inst.ProjectID, StartTime: at, UpdatedAt: at}
		if err := db.Create(&a).Error; err != nil {
			return fmt.Errorf("record action %s of %s: %w", reqID, inst.ID, err)
		}
	}
	// RecordEvent is idempotent on (action, event, host, start).
	return c.st.RecordEvent(ctx, store.Event{InstanceID: inst.ID, RequestID: reqID, Name: "capsule_" + string(ev.Kind),
		Host: ev.Host, Start: at, Finish: at, OK: ev.Severity == protocol.SeverityInfo, Detail: ev.Message})
}
