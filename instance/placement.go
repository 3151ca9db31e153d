package instance

import (
	"fmt"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/store"
)

// DefaultZone is Nova's default availability zone: a host without a zone
// of its own is in it.
const DefaultZone = "nova"

// NoValidHostMessage is Nova's fault message when no host can take an
// instance (a build's or a migration's).
const NoValidHostMessage = "No valid host was found. There are not enough hosts available."

// MigrationTarget is what a cold migration asks the scheduler for: a host
// other than Source with room for Resources, claimed for the migration
// (the scheduler's SelectTarget). Host, when set, is the only candidate.
// A refusal is an error with an Explain() string method.
type MigrationTarget struct {
	InstanceID       string
	MigrationID      uint
	Resources        store.Resources
	AvailabilityZone string
	Source           string
	Host             string
}

// ZoneOf returns the availability zone of compute host (DefaultZone when
// it has none of its own, or is not registered).
func ZoneOf(tx *gorm.DB, host string) (string, error) {
	var svc store.Service
	err := tx.Where("host = ? AND binary_name = ?", host, store.ComputeBinary).Limit(1).Find(&svc).Error
	if err != nil {
		return "", fmt.Errorf("zone of %s: %w", host, err)
	}
	if svc.Zone == "" {
		return DefaultZone, nil
	}
	return svc.Zone, nil
}
