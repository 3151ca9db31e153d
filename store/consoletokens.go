package store

import (
	"context"
	"fmt"
	"time"
)

// ConsoleToken is one remote console URL handed out and not used yet
// (Nova's console_auth_tokens): only the SHA-256 of the URL's token is
// kept, so the table cannot be read back into working URLs.
type ConsoleToken struct {
	TokenHash  string    `gorm:"primaryKey;size:64"`
	InstanceID string    `gorm:"index;size:36"`
	ProjectID  string    `gorm:"size:64"`
	Protocol   string    `gorm:"size:16"`
	ExpiresAt  time.Time `gorm:"index"`
	CreatedAt  time.Time
}

// CreateConsoleToken stores t and drops the tokens that expired before
// now (a URL nobody opened must not stay forever).
func (s *Store) CreateConsoleToken(ctx context.Context, t *ConsoleToken, now time.Time) error {
	db := s.WithContext(ctx)
	if err := db.Where("expires_at < ?", now).Delete(&ConsoleToken{}).Error; err != nil {
		return fmt.Errorf("purge expired console tokens: %w", err)
	}
	if err := db.Create(t).Error; err != nil {
		return fmt.Errorf("store console token of instance %s: %w", t.InstanceID, err)
	}
	return nil
}

// ConsumeConsoleToken deletes the token whose hash is hash and returns
// it, unless it is unknown, already used or expired at now (ErrNotFound).
// The delete decides: of two concurrent uses exactly one gets the token.
func (s *Store) ConsumeConsoleToken(ctx context.Context, hash string, now time.Time) (*ConsoleToken, error) {
	db := s.WithContext(ctx)
	var t ConsoleToken
	if err := db.Where("token_hash = ?", hash).First(&t).Error; err != nil {
		return nil, NotFound(err, "console token")
	}
	res := db.Where("token_hash = ?", hash).Delete(&ConsoleToken{})
	if res.Error != nil {
		return nil, fmt.Errorf("use console token: %w", res.Error)
	}
	if res.RowsAffected != 1 || !now.Before(t.ExpiresAt) {
		return nil, fmt.Errorf("console token: %w", ErrNotFound)
	}
	return &t, nil
}
