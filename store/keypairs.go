package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/capsule-cloud/capsule/errdefs"
	"gorm.io/gorm"
)

// ErrKeypairQuota means the user already has as many keypairs as allowed.
var ErrKeypairQuota = errdefs.QuotaExceeded("keypair quota exceeded")

// CreateKeypair inserts kp unless its user already has a keypair of that
// name (ErrConflict) or limit keypairs (ErrKeypairQuota; limit < 0 means
// no limit). The count and the insert are one transaction serialised per
// user, so two concurrent creates cannot both take the last slot.
func (s *Store) CreateKeypair(ctx context.Context, kp *Keypair, limit int) error {
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.lockUserKeypairs(tx, kp.UserID); err != nil {
			return err
		}
		if limit >= 0 {
			var n int64
			if err := tx.Model(&Keypair{}).Where("user_id = ?", kp.UserID).Count(&n).Error; err != nil {
				return fmt.Errorf("count keypairs: %w", err)
			}
			if n >= int64(limit) {
				return ErrKeypairQuota
			}
		}
		return tx.Create(kp).Error
	})
	if errors.Is(err, ErrKeypairQuota) {
		return fmt.Errorf("create keypair %q of user %s: %w", kp.Name, kp.UserID, err)
	}
	return NotFound(err, fmt.Sprintf("create keypair %q of user %s", kp.Name, kp.UserID))
}

// lockUserKeypairs serialises keypair creation per user. SQLite needs
// nothing: its transactions take the write lock at BEGIN (see Open).
// PostgreSQL at READ COMMITTED would let two transactions count the same
// rows, so it takes a transaction-scoped advisory lock on the user.
func (s *Store) lockUserKeypairs(tx *gorm.DB, userID string) error {
	if s.Driver != "postgres" {
		return nil
	}
	if err := tx.Exec("SELECT pg_advisory_xact_lock(hashtext(?))", "keypairs:"+userID).Error; err != nil {
		return fmt.Errorf("lock keypairs of user %s: %w", userID, err)
	}
	return nil
}

// GetKeypair returns userID's keypair name, or ErrNotFound.
func (s *Store) GetKeypair(ctx context.Context, userID, name string) (*Keypair, error) {
	var kp Keypair
	err := s.WithContext(ctx).Where("user_id = ? AND name = ?", userID, name).First(&kp).Error
	if err := NotFound(err, fmt.Sprintf("keypair %q of user %s", name, userID)); err != nil {
		return nil, err
	}
	return &kp, nil
}

// ListKeypairs returns userID's keypairs sorted by name, the order Nova
// pages them in (the marker is a name). Sorted here, byte-wise, because a
// PostgreSQL collation orders differently from SQLite.
func (s *Store) ListKeypairs(ctx context.Context, userID string) ([]Keypair, error) {
	var out []Keypair
	if err := s.WithContext(ctx).Where("user_id = ?", userID).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list keypairs of user %s: %w", userID, err)
	}
	slices.SortFunc(out, func(a, b Keypair) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// DeleteKeypair removes userID's keypair name, or returns ErrNotFound.
// Servers booted with it keep their copy of the key (Instance.KeyData).
func (s *Store) DeleteKeypair(ctx context.Context, userID, name string) error {
	res := s.WithContext(ctx).Where("user_id = ? AND name = ?", userID, name).Delete(&Keypair{})
	if res.Error != nil {
		return fmt.Errorf("delete keypair %q of user %s: %w", name, userID, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("delete keypair %q of user %s: %w", name, userID, ErrNotFound)
	}
	return nil
}

// CountKeypairs is how many keypairs userID has (the key_pairs quota's
// usage, which Nova counts per user).
func (s *Store) CountKeypairs(ctx context.Context, userID string) (int, error) {
	var n int64
	if err := s.WithContext(ctx).Model(&Keypair{}).Where("user_id = ?", userID).Count(&n).Error; err != nil {
		return 0, fmt.Errorf("count keypairs of user %s: %w", userID, err)
	}
	return int(n), nil
}
