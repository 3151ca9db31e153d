package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// OutboxMessage is a bus message written in the same transaction as the
// state change that implies it (the transactional outbox): it leaves the
// database only once that change committed, and stays until a relay had
// the broker's confirm for it, so neither a crash between commit and
// publish nor a broker outage loses it. Package outbox writes and relays
// the rows.
type OutboxMessage struct {
	ID        uint   `gorm:"primaryKey"`
	Queue     string `gorm:"size:255;not null"`
	MessageID string `gorm:"size:64;not null"`
	Kind      string `gorm:"size:64;not null"`
	Body      string `gorm:"type:text"`
	// InstanceID is the server the message is about ("" for none): the
	// task sweeper leaves a task alone while its message is still here.
	InstanceID string `gorm:"size:36;index"`
	CreatedAt  time.Time
	// DueAt is when a relay may take the row: its creation, then the end
	// of a relay's claim (a relay that died mid-way leaves it to another
	// at that time) or of the back-off after a failed publish.
	DueAt     time.Time `gorm:"index;not null"`
	Attempts  int
	ClaimedBy string `gorm:"size:255"`
}

// TableName is "outbox".
func (OutboxMessage) TableName() string { return "outbox" }

// ClaimOutbox takes up to limit rows that are due at now (only those of
// ids, when given) for owner until now+lease, oldest first, and returns
// them. Several relays may claim side by side: on PostgreSQL the rows are
// read FOR UPDATE SKIP LOCKED, so each row goes to one claimer and nobody
// waits for another's claim; SQLite runs one writing transaction at a time
// (the store begins them IMMEDIATE), which serializes the claims.
func (s *Store) ClaimOutbox(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int, ids ...uint) ([]OutboxMessage, error) {
	var rows []OutboxMessage
	if len(ids) == 0 {
		// The relay loop's usual case is an empty outbox: answer it with
		// a read, without taking SQLite's write lock every interval.
		var due []uint
		if err := s.WithContext(ctx).Model(&OutboxMessage{}).Where("due_at <= ?", now).Limit(1).Pluck("id", &due).Error; err != nil {
			return nil, fmt.Errorf("store: look for due outbox messages: %w", err)
		}
		if len(due) == 0 {
			return nil, nil
		}
	}
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		q := tx.Where("due_at <= ?", now).Order("id").Limit(limit)
		if len(ids) > 0 {
			q = q.Where("id IN ?", ids)
		}
		if s.Driver == "postgres" {
			q = q.Clauses(clause.Locking{Strength: "UPDATE", Options: "SKIP LOCKED"})
		}
		if err := q.Find(&rows).Error; err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		claimed := make([]uint, len(rows))
		for i := range rows {
			claimed[i] = rows[i].ID
			rows[i].Attempts++
			rows[i].ClaimedBy = owner
		}
		return tx.Model(&OutboxMessage{}).Where("id IN ?", claimed).Updates(map[string]any{
			"due_at": now.Add(lease), "claimed_by": owner, "attempts": gorm.Expr("attempts + 1")}).Error
	})
	if err != nil {
		return nil, fmt.Errorf("store: claim outbox messages: %w", err)
	}
	return rows, nil
}

// DeleteOutbox removes rows the broker confirmed.
func (s *Store) DeleteOutbox(ctx context.Context, ids ...uint) error {
	if len(ids) == 0 {
		return nil
	}
	if err := s.WithContext(ctx).Where("id IN ?", ids).Delete(&OutboxMessage{}).Error; err != nil {
		return fmt.Errorf("store: delete relayed outbox messages: %w", err)
	}
	return nil
}

// RetryOutbox makes a row whose publish failed due again at due, unless
// another relay claimed it meanwhile.
func (s *Store) RetryOutbox(ctx context.Context, id uint, owner string, due time.Time) error {
	err := s.WithContext(ctx).Model(&OutboxMessage{}).Where("id = ? AND claimed_by = ?", id, owner).
		Updates(map[string]any{"due_at": due, "claimed_by": ""}).Error
	if err != nil {
		return fmt.Errorf("store: reschedule outbox message %d: %w", id, err)
	}
	return nil
}

// OutboxPending reports whether a message about instance id still waits
// in the outbox.
func OutboxPending(tx *gorm.DB, id string) (bool, error) {
	var n int64
	if err := tx.Model(&OutboxMessage{}).Where("instance_id = ?", id).Count(&n).Error; err != nil {
		return false, fmt.Errorf("store: outbox messages of %s: %w", id, err)
	}
	return n > 0, nil
}

// DropOutbox removes the messages about instance id written before
// before (the broker refused them for that long) and returns how many.
func DropOutbox(tx *gorm.DB, id string, before time.Time) (int64, error) {
	res := tx.Where("instance_id = ? AND created_at < ?", id, before).Delete(&OutboxMessage{})
	if res.Error != nil {
		return 0, fmt.Errorf("store: drop outbox messages of %s: %w", id, res.Error)
	}
	return res.RowsAffected, nil
}
