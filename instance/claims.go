package instance

import (
	"fmt"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/store"
)

// Claims: what an instance holds on a host. The scheduler's placement
// claims through store.ClaimOnHostIf (under the host's lock, with its
// group guard); the operations here change or give back claims already
// made.

// ResizeClaim changes the instance's claim on host to want, in tx (see
// store.ResizeClaimTx): store.ErrInsufficient when the host lacks room.
func ResizeClaim(tx *gorm.DB, id, host string, want store.Resources) error {
	return store.ResizeClaimTx(tx, id, host, want)
}

// SetClaim records that id holds res on host, whatever the room: it is
// what really runs there (a driver rolled back, a revert failed, a resize
// never reached its host), and the claim must say so.
func SetClaim(tx *gorm.DB, id, host string, res store.Resources) error {
	err := tx.Model(&store.Claim{}).Where("instance_id = ? AND host = ?", id, host).
		Updates(map[string]any{"vcpus": res.VCPUs, "memory_mb": res.MemoryMB, "disk_gb": res.DiskGB}).Error
	if err != nil {
		return fmt.Errorf("set claim of %s on %s: %w", id, host, err)
	}
	return nil
}

// ReleaseClaims drops id's claims on host ("" = on every host).
func ReleaseClaims(tx *gorm.DB, id, host string) error {
	q := tx.Where("instance_id = ?", id)
	if host != "" {
		q = q.Where("host = ?", host)
	}
	if err := q.Delete(&store.Claim{}).Error; err != nil {
		return fmt.Errorf("release claims of %s on %q: %w", id, host, err)
	}
	return nil
}

// BindPorts binds the instance's ports to host (Neutron's
// binding:host_id) and marks them active: where the scheduler placed it,
// or where a migration moves it.
func BindPorts(tx *gorm.DB, id, host string) error {
	err := tx.Model(&store.Port{}).Where("device_id = ?", id).
		Updates(map[string]any{"binding_host_id": host, "status": store.PortActive}).Error
	if err != nil {
		return fmt.Errorf("bind ports of %s to %s: %w", id, host, err)
	}
	return nil
}
