package store

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"
)

// Resources is an amount of a host's capacity.
type Resources struct {
	VCPUs    int
	MemoryMB int
	DiskGB   int
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{r.VCPUs + o.VCPUs, r.MemoryMB + o.MemoryMB, r.DiskGB + o.DiskGB}
}

// ErrInsufficient is returned when a claim does not fit the host.
var ErrInsufficient = errors.New("insufficient resources")

// ComputeBinary is the service binary name compute agents register as;
// clients (Tempest, OSC) filter os-services on it.
const ComputeBinary = "nova-compute"

// Capacity returns what a host may hand out: physical capacity times its
// allocation ratio, less reservations.
func Capacity(svc *Service) Resources {
	ratio := func(r float64) float64 {
		if r <= 0 {
			return 1
		}
		return r
	}
	return Resources{
		VCPUs:    int(float64(svc.VCPUs) * ratio(svc.CPUAllocationRatio)),
		MemoryMB: int(float64(svc.MemoryMB-svc.ReservedMemoryMB) * ratio(svc.RAMAllocationRatio)),
		DiskGB:   int(float64(svc.DiskGB) * ratio(svc.DiskAllocationRatio)),
	}
}

// Fits reports whether used+want stays within capacity.
func Fits(capacity, used, want Resources) bool {
	return used.VCPUs+want.VCPUs <= capacity.VCPUs &&
		used.MemoryMB+want.MemoryMB <= capacity.MemoryMB &&
		used.DiskGB+want.DiskGB <= capacity.DiskGB
}

// ClaimOnHost atomically reserves want on host for an instance. Concurrent
// claims on the same host are serialised by bumping the host's
// claim_generation first: on PostgreSQL the UPDATE holds the row lock until
// commit, on SQLite the write lock does. A repeated claim for the same
// (instance, host) is a no-op, so a redelivered message is harmless.
func (s *Store) ClaimOnHost(ctx context.Context, host, instanceID string, want Resources, migrationID *uint) error {
	return s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&Service{}).Where("host = ? AND binary_name = ?", host, ComputeBinary).
			UpdateColumn("claim_generation", gorm.Expr("claim_generation + 1"))
		if res.Error != nil {
			return fmt.Errorf("claim: lock host %s: %w", host, res.Error)
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("claim: host %s: %w", host, ErrNotFound)
		}
		var existing int64
		if err := tx.Model(&Claim{}).Where("instance_id = ? AND host = ?", instanceID, host).Count(&existing).Error; err != nil {
			return fmt.Errorf("claim: look up existing: %w", err)
		}
		if existing > 0 {
			return nil
		}
		var svc Service
		if err := tx.Where("host = ? AND binary_name = ?", host, ComputeBinary).First(&svc).Error; err != nil {
			return NotFound(err, "claim: host "+host)
		}
		used, err := usedOn(tx, host)
		if err != nil {
			return err
		}
		if !Fits(Capacity(&svc), used, want) {
			return fmt.Errorf("claim on %s for %d vCPU/%d MB/%d GB: %w", host, want.VCPUs, want.MemoryMB, want.DiskGB, ErrInsufficient)
		}
		c := Claim{InstanceID: instanceID, Host: host, VCPUs: want.VCPUs, MemoryMB: want.MemoryMB, DiskGB: want.DiskGB, MigrationID: migrationID}
		if err := tx.Create(&c).Error; err != nil {
			return fmt.Errorf("claim: insert: %w", err)
		}
		return nil
	})
}

// ReleaseClaim drops an instance's claim on host ("" = every host).
func (s *Store) ReleaseClaim(ctx context.Context, instanceID, host string) error {
	q := s.WithContext(ctx).Where("instance_id = ?", instanceID)
	if host != "" {
		q = q.Where("host = ?", host)
	}
	if err := q.Delete(&Claim{}).Error; err != nil {
		return fmt.Errorf("release claim of %s on %q: %w", instanceID, host, err)
	}
	return nil
}

func usedOn(tx *gorm.DB, host string) (Resources, error) {
	var u struct{ V, M, D int }
	err := tx.Model(&Claim{}).Where("host = ?", host).
		Select("COALESCE(SUM(vcpus),0) AS v, COALESCE(SUM(memory_mb),0) AS m, COALESCE(SUM(disk_gb),0) AS d").
		Scan(&u).Error
	if err != nil {
		return Resources{}, fmt.Errorf("claim: usage of %s: %w", host, err)
	}
	return Resources{u.V, u.M, u.D}, nil
}

// Usage returns the claimed resources per host.
func (s *Store) Usage(ctx context.Context) (map[string]Resources, error) {
	var rows []struct {
		Host    string
		V, M, D int
	}
	err := s.WithContext(ctx).Model(&Claim{}).
		Select("host, COALESCE(SUM(vcpus),0) AS v, COALESCE(SUM(memory_mb),0) AS m, COALESCE(SUM(disk_gb),0) AS d").
		Group("host").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("usage per host: %w", err)
	}
	out := make(map[string]Resources, len(rows))
	for _, r := range rows {
		out[r.Host] = Resources{r.V, r.M, r.D}
	}
	return out, nil
}
