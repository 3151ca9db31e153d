package store

import (
	"context"
	"fmt"
	"time"
)

// StartAction records an API-level action on an instance
// (os-instance-actions), keyed by the API call's request id.
func (s *Store) StartAction(ctx context.Context, instanceID, action, requestID, userID, projectID string) error {
	now := time.Now().UTC()
	a := InstanceAction{InstanceID: instanceID, Action: action, RequestID: requestID, UserID: userID,
		ProjectID: projectID, StartTime: now, UpdatedAt: now}
	if err := s.WithContext(ctx).Create(&a).Error; err != nil {
		return fmt.Errorf("record action %s on %s: %w", action, instanceID, err)
	}
	return nil
}

// Event is one finished step of an action.
type Event struct {
	InstanceID string
	RequestID  string
	Name       string
	Host       string
	Start      time.Time
	Finish     time.Time
	OK         bool
	Detail     string // error text when !OK (the admins' traceback)
	// Message is why it failed in words its user may read (errdefs.Message
	// of the error); a failure without one is recorded with
	// GenericEventDetails.
	Message string
}

// GenericEventDetails are the details of a failed event whose error
// carries no message its user may read.
const GenericEventDetails = "The operation failed on the compute host; an administrator can see why in the event's traceback."

// RecordEvent appends an event to the action with the event's request id.
// An unknown action is not an error: the event is dropped (the action may
// have been recorded by an older binary, or the instance purged).
func (s *Store) RecordEvent(ctx context.Context, e Event) error {
	var a InstanceAction
	err := s.WithContext(ctx).Where("instance_id = ? AND request_id = ?", e.InstanceID, e.RequestID).
		Order("id DESC").Limit(1).Find(&a).Error
	if err != nil {
		return fmt.Errorf("find action %s of %s: %w", e.RequestID, e.InstanceID, err)
	}
	if a.ID == 0 {
		return nil
	}
	result := "Success"
	if !e.OK {
		result = "Error"
	}
	if e.Start.IsZero() {
		e.Start = time.Now().UTC()
	}
	finish := e.Finish
	if finish.IsZero() {
		finish = time.Now().UTC()
	}
	ev := InstanceActionEvent{ActionID: a.ID, Event: e.Name, Host: e.Host, StartTime: e.Start.UTC().Truncate(time.Microsecond),
		FinishTime: &finish, Result: result, Traceback: e.Detail}
	if !e.OK {
		ev.Details = e.Message
		if ev.Details == "" {
			ev.Details = GenericEventDetails
		}
	}
	db := s.WithContext(ctx)
	// A redelivered report carries the same event (same step, host and
	// start): record it once.
	var dup int64
	if err := db.Model(&InstanceActionEvent{}).Where("action_id = ? AND event = ? AND host = ? AND start_time = ?",
		a.ID, ev.Event, ev.Host, ev.StartTime).Count(&dup).Error; err != nil {
		return fmt.Errorf("look up event %s: %w", e.Name, err)
	}
	if dup > 0 {
		return nil
	}
	if err := db.Create(&ev).Error; err != nil {
		return fmt.Errorf("record event %s: %w", e.Name, err)
	}
	upd := map[string]any{"updated_at": finish}
	if !e.OK {
		upd["message"] = "Error"
	}
	return db.Model(&InstanceAction{}).Where("id = ?", a.ID).Updates(upd).Error
}
