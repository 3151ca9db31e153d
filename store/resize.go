package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// ResizeClaim atomically changes instanceID's claim on host to want: the
// host must hold want with the instance's own current claim given back
// first, so growing a server in place only needs room for the difference.
// It takes the same host row lock as ClaimOnHost, so it serialises with
// every other claim on the host. A revert calls it with the old size.
// Without room it returns ErrInsufficient and changes nothing. The claim
// keeps its CPU class: a dedicated server's vCPUs stay PCPUs (a live
// resize cannot change hw:cpu_policy).
func (s *Store) ResizeClaim(ctx context.Context, instanceID, host string, want Resources) error {
	return s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return ResizeClaimTx(tx, instanceID, host, want)
	})
}

// ResizeClaimTx is ResizeClaim inside the caller's transaction tx, for a
// caller that changes the instance in the same transaction.
func ResizeClaimTx(tx *gorm.DB, instanceID, host string, want Resources) error {
	res := tx.Model(&Service{}).Where("host = ? AND binary_name = ?", host, ComputeBinary).
		UpdateColumn("claim_generation", gorm.Expr("claim_generation + 1"))
	if res.Error != nil {
		return fmt.Errorf("resize claim: lock host %s: %w", host, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("resize claim: host %s: %w", host, ErrNotFound)
	}
	var svc Service
	if err := tx.Where("host = ? AND binary_name = ?", host, ComputeBinary).First(&svc).Error; err != nil {
		return NotFound(err, "resize claim: host "+host)
	}
	var own []Claim
	if err := tx.Where("instance_id = ? AND host = ?", instanceID, host).Find(&own).Error; err != nil {
		return fmt.Errorf("resize claim: claim of %s: %w", instanceID, err)
	}
	var err error
	switch {
	case len(own) > 0 && own[0].Dedicated && want.PCPUs == 0:
		want = want.AsDedicated()
	case len(own) == 0:
		if want, err = demandOf(tx, instanceID, want); err != nil {
			return err
		}
	}
	c, err := claimOf(instanceID, host, want, nil)
	if err != nil {
		return err
	}
	used, err := usedOn(tx, host)
	if err != nil {
		return err
	}
	for _, c := range own {
		u := claimUse(c)
		used = used.Add(Resources{VCPUs: -u.VCPUs, MemoryMB: -u.MemoryMB, DiskGB: -u.DiskGB, PCPUs: -u.PCPUs})
	}
	if !Fits(Capacity(&svc), used, want) {
		return fmt.Errorf("resize claim of %s on %s to %d vCPU/%d dedicated CPU/%d MB/%d GB: %w",
			instanceID, host, want.VCPUs, want.PCPUs, want.MemoryMB, want.DiskGB, ErrInsufficient)
	}
	if len(own) == 0 {
		if err := tx.Create(&c).Error; err != nil {
			return fmt.Errorf("resize claim: insert: %w", err)
		}
		return nil
	}
	err = tx.Model(&Claim{}).Where("instance_id = ? AND host = ?", instanceID, host).
		Updates(map[string]any{"vcpus": c.VCPUs, "memory_mb": c.MemoryMB, "disk_gb": c.DiskGB, "dedicated": c.Dedicated}).Error
	if err != nil {
		return fmt.Errorf("resize claim of %s on %s: update: %w", instanceID, host, err)
	}
	return nil
}
