package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// Control-plane service binaries, named as Nova's so os-services reads as
// operators expect.
const (
	SchedulerBinary = "nova-scheduler"
	ConductorBinary = "nova-conductor"
)

// Heartbeat records that a control-plane service (scheduler, conductor) on
// host is alive, registering it the first time. Compute hosts heartbeat
// through the conductor instead (they have no database access).
func (s *Store) Heartbeat(ctx context.Context, host, binary string, now time.Time) error {
	db := s.WithContext(ctx)
	res := db.Model(&Service{}).Where("host = ? AND binary_name = ?", host, binary).
		Updates(map[string]any{"last_heartbeat": now, "updated_at": now})
	if res.Error != nil {
		return fmt.Errorf("heartbeat of %s on %s: %w", binary, host, res.Error)
	}
	if res.RowsAffected > 0 {
		return nil
	}
	svc := Service{UUID: uuid.NewString(), Host: host, Binary: binary, Zone: "internal", LastHeartbeat: &now}
	if err := db.Create(&svc).Error; err != nil && !errors.Is(err, gorm.ErrDuplicatedKey) {
		return fmt.Errorf("register %s on %s: %w", binary, host, err)
	}
	return nil
}

// KeepAlive heartbeats every interval until ctx ends; errors are returned
// through report (logged by the caller) and never stop the loop.
func (s *Store) KeepAlive(ctx context.Context, host, binary string, interval time.Duration, report func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Heartbeat(ctx, host, binary, time.Now().UTC()); err != nil && ctx.Err() == nil {
			report(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
