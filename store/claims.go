package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/capsule-cloud/capsule/errdefs"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Resources is an amount of a host's capacity. CPUs come in Nova's two
// resource classes: VCPUs are shared vCPUs (the host's shared CPUs times
// its allocation ratio), PCPUs are dedicated host CPUs (its
// cpu_dedicated_set, one server per CPU). A hw:cpu_policy=dedicated server
// asks for PCPUs only, any other for VCPUs only.
type Resources struct {
	VCPUs    int
	MemoryMB int
	DiskGB   int
	PCPUs    int
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{VCPUs: r.VCPUs + o.VCPUs, MemoryMB: r.MemoryMB + o.MemoryMB, DiskGB: r.DiskGB + o.DiskGB,
		PCPUs: r.PCPUs + o.PCPUs}
}

// Scale returns r with every amount multiplied by k.
func (r Resources) Scale(k int) Resources {
	return Resources{VCPUs: r.VCPUs * k, MemoryMB: r.MemoryMB * k, DiskGB: r.DiskGB * k, PCPUs: r.PCPUs * k}
}

// AsDedicated returns r with its vCPUs asked as PCPUs: what a
// hw:cpu_policy=dedicated flavor of r needs from a host.
func (r Resources) AsDedicated() Resources {
	r.PCPUs, r.VCPUs = r.PCPUs+r.VCPUs, 0
	return r
}

// IsDedicated reports whether extraSpecs (an instance's or flavor's extra
// specs as stored, JSON) ask for hw:cpu_policy=dedicated.
func IsDedicated(extraSpecs string) bool {
	var m map[string]string
	if extraSpecs == "" || json.Unmarshal([]byte(extraSpecs), &m) != nil {
		return false
	}
	return m["hw:cpu_policy"] == "dedicated"
}

// ErrInsufficient is returned when a claim does not fit the host (a
// FailedPrecondition: the host has no room now).
var ErrInsufficient = errdefs.FailedPrecondition("insufficient resources")

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
		PCPUs:    svc.PCPUs, // never overcommitted
	}
}

// Fits reports whether used+want stays within capacity. A CPU class the
// request does not ask for is not checked, as in Nova's placement: a
// dedicated server is not refused because shared vCPUs are overcommitted,
// nor a shared one because an operator shrank the dedicated set.
func Fits(capacity, used, want Resources) bool {
	cpu := func(used, want, capacity int) bool { return want == 0 || used+want <= capacity }
	return cpu(used.VCPUs, want.VCPUs, capacity.VCPUs) &&
		cpu(used.PCPUs, want.PCPUs, capacity.PCPUs) &&
		used.MemoryMB+want.MemoryMB <= capacity.MemoryMB &&
		used.DiskGB+want.DiskGB <= capacity.DiskGB
}

// claimUse is what claim c takes from its host.
func claimUse(c Claim) Resources {
	r := Resources{VCPUs: c.VCPUs, MemoryMB: c.MemoryMB, DiskGB: c.DiskGB}
	if c.Dedicated {
		return r.AsDedicated()
	}
	return r
}

// claimOf is the claim row of want (a claim holds one CPU class: its
// VCPUs column counts PCPUs when Dedicated).
func claimOf(instanceID, host string, want Resources, migrationID *uint) (Claim, error) {
	if want.VCPUs > 0 && want.PCPUs > 0 {
		return Claim{}, fmt.Errorf("claim of %s on %s: %d shared and %d dedicated CPUs: mixed CPU policies are not supported",
			instanceID, host, want.VCPUs, want.PCPUs)
	}
	return Claim{InstanceID: instanceID, Host: host, VCPUs: want.VCPUs + want.PCPUs, MemoryMB: want.MemoryMB,
		DiskGB: want.DiskGB, Dedicated: want.PCPUs > 0, MigrationID: migrationID}, nil
}

// demandOf returns want as instanceID needs it: callers size claims from
// the flavor (VCPUs), and an instance whose extra specs ask for
// hw:cpu_policy=dedicated needs those as PCPUs. want already asking for
// PCPUs is taken as is; an instance not found (none yet) is shared.
func demandOf(tx *gorm.DB, instanceID string, want Resources) (Resources, error) {
	if want.PCPUs > 0 || want.VCPUs == 0 {
		return want, nil
	}
	var specs []string
	if err := tx.Model(&Instance{}).Where("id = ?", instanceID).Limit(1).Pluck("extra_specs", &specs).Error; err != nil {
		return want, fmt.Errorf("claim: cpu policy of %s: %w", instanceID, err)
	}
	if len(specs) > 0 && IsDedicated(specs[0]) {
		return want.AsDedicated(), nil
	}
	return want, nil
}

// ClaimOnHost atomically reserves want on host for an instance. Concurrent
// claims on the same host are serialised by bumping the host's
// claim_generation first: on PostgreSQL the UPDATE holds the row lock until
// commit, on SQLite the write lock does. A repeated claim for the same
// (instance, host) is a no-op, so a redelivered message is harmless. want
// is the flavor's size: a dedicated instance's vCPUs are claimed as the
// host's PCPUs (see demandOf), under the same lock.
func (s *Store) ClaimOnHost(ctx context.Context, host, instanceID string, want Resources, migrationID *uint) error {
	return s.ClaimOnHostIf(ctx, host, instanceID, want, migrationID, nil)
}

// ClaimGuard is a check a claim must pass under the host lock, in the
// claim's transaction (e.g. a server group's policy, see GroupClaimGuard);
// its error aborts the claim.
type ClaimGuard func(tx *gorm.DB, host string) error

// ClaimOnHostIf is ClaimOnHost that first runs guard (nil: none) under the
// same lock, so what the guard read cannot change before the claim lands.
func (s *Store) ClaimOnHostIf(ctx context.Context, host, instanceID string, want Resources, migrationID *uint,
	guard ClaimGuard) error {
	return s.Claim(ctx, host, instanceID, want, ClaimOptions{MigrationID: migrationID, Guard: guard})
}

// ClaimOptions are a claim's optional parts.
type ClaimOptions struct {
	MigrationID *uint      // recorded on a migration's target claim
	Guard       ClaimGuard // run first under the host lock (nil: none)
	// Accept, when set, sees the host's service row and what is claimed on
	// it under the claim's lock, before the fit check; its error aborts the
	// claim. A scheduler choosing from a cached view of its hosts re-checks
	// here what its filters saw (disabled, down, zone), exactly.
	Accept func(svc *Service, used Resources) error
	// Resolved says want is already in its CPU class (a dedicated
	// instance's vCPUs as PCPUs), so the instance's extra specs need not
	// be read (see demandOf).
	Resolved bool
}

// Claim is ClaimOnHost with options (see ClaimOptions).
func (s *Store) Claim(ctx context.Context, host, instanceID string, want Resources, o ClaimOptions) error {
	return s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// The bump is the host lock; RETURNING reads the row under it in
		// the same statement.
		var svcs []Service
		res := tx.Model(&svcs).Clauses(clause.Returning{}).Where("host = ? AND binary_name = ?", host, ComputeBinary).
			UpdateColumn("claim_generation", gorm.Expr("claim_generation + 1"))
		if res.Error != nil {
			return fmt.Errorf("claim: lock host %s: %w", host, res.Error)
		}
		if res.RowsAffected == 0 || len(svcs) == 0 {
			return fmt.Errorf("claim: host %s: %w", host, ErrNotFound)
		}
		svc := &svcs[0]
		// One read for both: whether this instance already holds a claim
		// here (a redelivery: nothing to do) and what the host has claimed.
		var u struct{ Existing, V, P, M, D int }
		if err := tx.Model(&Claim{}).Where("host = ?", host).
			Select("COALESCE(SUM(CASE WHEN instance_id = ? THEN 1 ELSE 0 END),0) AS existing, "+usageColumns, instanceID).
			Scan(&u).Error; err != nil {
			return fmt.Errorf("claim: usage of %s: %w", host, err)
		}
		if u.Existing > 0 {
			return nil
		}
		used := Resources{VCPUs: u.V, MemoryMB: u.M, DiskGB: u.D, PCPUs: u.P}
		if o.Guard != nil {
			if err := o.Guard(tx, host); err != nil {
				return err
			}
		}
		need := want
		if !o.Resolved {
			var err error
			if need, err = demandOf(tx, instanceID, want); err != nil {
				return err
			}
		}
		c, err := claimOf(instanceID, host, need, o.MigrationID)
		if err != nil {
			return err
		}
		if o.Accept != nil {
			if err := o.Accept(svc, used); err != nil {
				return err
			}
		}
		if !Fits(Capacity(svc), used, need) {
			return fmt.Errorf("claim on %s for %d vCPU/%d dedicated CPU/%d MB/%d GB: %w", host, need.VCPUs, need.PCPUs,
				need.MemoryMB, need.DiskGB, ErrInsufficient)
		}
		if err := tx.Create(&c).Error; err != nil {
			return fmt.Errorf("claim: insert: %w", err)
		}
		return nil
	})
}

// HostUsage returns what is claimed on host.
func (s *Store) HostUsage(ctx context.Context, host string) (Resources, error) {
	return usedOn(s.WithContext(ctx), host)
}

// usageColumns sums claims per CPU class: a dedicated claim's vcpus are
// PCPUs and count nothing against the shared vCPUs (as in Nova).
const usageColumns = "COALESCE(SUM(CASE WHEN dedicated THEN 0 ELSE vcpus END),0) AS v, " +
	"COALESCE(SUM(CASE WHEN dedicated THEN vcpus ELSE 0 END),0) AS p, " +
	"COALESCE(SUM(memory_mb),0) AS m, COALESCE(SUM(disk_gb),0) AS d"

func usedOn(tx *gorm.DB, host string) (Resources, error) {
	var u struct{ V, P, M, D int }
	err := tx.Model(&Claim{}).Where("host = ?", host).Select(usageColumns).Scan(&u).Error
	if err != nil {
		return Resources{}, fmt.Errorf("claim: usage of %s: %w", host, err)
	}
	return Resources{VCPUs: u.V, MemoryMB: u.M, DiskGB: u.D, PCPUs: u.P}, nil
}

// Usage returns the claimed resources per host.
func (s *Store) Usage(ctx context.Context) (map[string]Resources, error) {
	var rows []struct {
		Host       string
		V, P, M, D int
	}
	err := s.WithContext(ctx).Model(&Claim{}).Select("host, " + usageColumns).Group("host").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("usage per host: %w", err)
	}
	out := make(map[string]Resources, len(rows))
	for _, r := range rows {
		out[r.Host] = Resources{VCPUs: r.V, MemoryMB: r.M, DiskGB: r.D, PCPUs: r.P}
	}
	return out, nil
}
