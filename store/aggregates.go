package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/capsule-cloud/capsule/errdefs"
)

// AggregateZoneKey is the aggregate metadata key that puts the
// aggregate's hosts in an availability zone, as in Nova.
const AggregateZoneKey = "availability_zone"

// defaultZone is Nova's default availability zone: a compute host whose
// agent names none and that no zoned aggregate holds is in it.
const defaultZone = "nova"

// Aggregate is a host aggregate (Nova's os-aggregates): a named set of
// compute hosts with metadata. Its "availability_zone" metadata is the
// zone of its hosts: written through to their services' Zone, which is
// what the scheduler, os-availability-zone and placement read.
type Aggregate struct {
	ID        uint   `gorm:"primaryKey"`
	UUID      string `gorm:"size:64;uniqueIndex"`
	Name      string `gorm:"size:255;uniqueIndex"`
	Metadata  string // JSON object of strings
	CreatedAt time.Time
	UpdatedAt *time.Time `gorm:"autoUpdateTime:false"`
}

// AggregateHost is one compute host's membership of an aggregate.
type AggregateHost struct {
	AggregateID uint   `gorm:"primaryKey"`
	Host        string `gorm:"primaryKey;size:255;index"`
}

// AggregateView is an aggregate with its hosts (sorted) and metadata.
type AggregateView struct {
	Aggregate
	Hosts []string
	Meta  map[string]string
}

// Zone is the aggregate's availability zone ("" when it sets none).
func (a *AggregateView) Zone() string { return a.Meta[AggregateZoneKey] }

func aggregateNotFound(id uint) error {
	return errdefs.NotFoundf("Aggregate %d could not be found.", id)
}

// ListAggregates returns every aggregate, oldest first.
func (s *Store) ListAggregates(ctx context.Context) ([]AggregateView, error) {
	db := s.WithContext(ctx)
	var aggs []Aggregate
	if err := db.Order("id").Find(&aggs).Error; err != nil {
		return nil, fmt.Errorf("list aggregates: %w", err)
	}
	var members []AggregateHost
	if err := db.Order("host").Find(&members).Error; err != nil {
		return nil, fmt.Errorf("list aggregate hosts: %w", err)
	}
	hosts := map[uint][]string{}
	for _, m := range members {
		hosts[m.AggregateID] = append(hosts[m.AggregateID], m.Host)
	}
	out := make([]AggregateView, 0, len(aggs))
	for _, a := range aggs {
		out = append(out, aggregateView(a, hosts[a.ID]))
	}
	return out, nil
}

// GetAggregate returns aggregate id.
func (s *Store) GetAggregate(ctx context.Context, id uint) (*AggregateView, error) {
	return loadAggregate(s.WithContext(ctx), id, false)
}

func loadAggregate(tx *gorm.DB, id uint, lock bool) (*AggregateView, error) {
	q := tx
	if lock {
		q = q.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	var a Aggregate
	if err := q.Where("id = ?", id).First(&a).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, aggregateNotFound(id)
		}
		return nil, fmt.Errorf("aggregate %d: %w", id, err)
	}
	var hosts []string
	if err := tx.Model(&AggregateHost{}).Where("aggregate_id = ?", id).Order("host").Pluck("host", &hosts).Error; err != nil {
		return nil, fmt.Errorf("hosts of aggregate %d: %w", id, err)
	}
	v := aggregateView(a, hosts)
	return &v, nil
}

func aggregateView(a Aggregate, hosts []string) AggregateView {
	meta := map[string]string{}
	if a.Metadata != "" {
		_ = json.Unmarshal([]byte(a.Metadata), &meta)
	}
	if hosts == nil {
		hosts = []string{}
	}
	return AggregateView{Aggregate: a, Hosts: hosts, Meta: meta}
}

// CreateAggregate creates an aggregate named name, in zone when zone is
// not empty. A name in use is a Conflict.
func (s *Store) CreateAggregate(ctx context.Context, name, zone string, now time.Time) (*AggregateView, error) {
	meta := map[string]string{}
	if zone != "" {
		meta[AggregateZoneKey] = zone
	}
	var out *AggregateView
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := nameFree(tx, name, 0); err != nil {
			return err
		}
		enc, _ := json.Marshal(meta)
		a := Aggregate{UUID: uuid.NewString(), Name: name, Metadata: string(enc), CreatedAt: now}
		if err := tx.Create(&a).Error; err != nil {
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				return errdefs.Conflictf("Aggregate %s already exists.", name)
			}
			return fmt.Errorf("create aggregate %s: %w", name, err)
		}
		v := aggregateView(a, nil)
		out = &v
		return nil
	})
	return out, err
}

func nameFree(tx *gorm.DB, name string, self uint) error {
	var n int64
	if err := tx.Model(&Aggregate{}).Where("name = ? AND id <> ?", name, self).Count(&n).Error; err != nil {
		return fmt.Errorf("aggregate name %s: %w", name, err)
	}
	if n > 0 {
		return errdefs.Conflictf("Aggregate %s already exists.", name)
	}
	return nil
}

// AggregateChange is what an update of an aggregate does: a new name
// (PUT), a new zone (PUT; Zone set), metadata keys set or, with a nil
// value, removed (set_metadata), a host added or removed.
type AggregateChange struct {
	Name       *string
	Zone       *string
	Meta       map[string]*string
	AddHost    string
	RemoveHost string
}

// UpdateAggregate applies c to aggregate id under a lock on it and on the
// hosts it concerns, with Nova's checks (InvalidArgument or Conflict
// errors carrying Nova's reason), then writes the zones of the hosts
// whose zone it changed to their services.
//
// A host's zone is that of the zoned aggregate holding it, else the zone
// its agent registered with. Nova's rules: an aggregate's zone may not be
// empty; a host may not be in two aggregates of different zones; the
// zone of an aggregate whose hosts run servers may not change. Capsule
// also refuses adding or removing a host that runs servers when that
// moves it to another zone: a server's zone is recorded when it is placed
// (and migrations keep it), so its host must stay in it.
func (s *Store) UpdateAggregate(ctx context.Context, id uint, c AggregateChange, now time.Time) (*AggregateView, error) {
	var out *AggregateView
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		agg, err := loadAggregate(tx, id, true)
		if err != nil {
			return err
		}
		hosts := slices.Clone(agg.Hosts)
		if c.AddHost != "" {
			if err := lockComputeHost(tx, c.AddHost); err != nil {
				return err
			}
			if slices.Contains(hosts, c.AddHost) {
				return errdefs.Conflictf("Aggregate %d already has host %s.", id, c.AddHost)
			}
			hosts = append(hosts, c.AddHost)
		}
		if c.RemoveHost != "" {
			if !slices.Contains(hosts, c.RemoveHost) {
				return errdefs.NotFoundf("Cannot remove host %s in aggregate %d. Reason: Host %s not found in aggregate.", c.RemoveHost, id, c.RemoveHost)
			}
			if err := lockComputeHost(tx, c.RemoveHost); err != nil {
				return err
			}
		}
		if c.Name != nil && *c.Name != agg.Name {
			if err := nameFree(tx, *c.Name, id); err != nil {
				return err
			}
			agg.Name = *c.Name
		}
		meta := maps.Clone(agg.Meta)
		for k, v := range c.Meta {
			if v == nil {
				delete(meta, k)
			} else {
				meta[k] = *v
			}
		}
		if c.Zone != nil {
			meta[AggregateZoneKey] = *c.Zone
		}
		action := "update aggregate"
		switch {
		case c.AddHost != "":
			action = "add host to aggregate"
		case c.RemoveHost != "":
			action = "remove host from aggregate"
		case c.Meta != nil:
			action = "update aggregate metadata"
		}
		invalid := func(reason string) error {
			if c.AddHost != "" || c.RemoveHost != "" {
				return errdefs.Conflictf("Cannot %s %d. Reason: %s.", action, id, reason)
			}
			return errdefs.InvalidArgumentf("Cannot %s %d. Reason: %s.", action, id, reason)
		}
		zone, zoned := meta[AggregateZoneKey]
		if zoned && zone == "" {
			return invalid(fmt.Sprintf("Aggregate %s does not support empty named availability zone", agg.Name))
		}
		// The zones the hosts concerned would have after the change.
		concerned := hosts
		if c.RemoveHost != "" {
			concerned = append(slices.Clone(hosts), c.RemoveHost)
		}
		if zoned {
			var others []string
			if err := tx.Raw(`SELECT DISTINCT a.metadata FROM aggregates a JOIN aggregate_hosts h ON h.aggregate_id = a.id
				WHERE h.host IN ? AND a.id <> ?`, nonEmpty(hosts), id).Scan(&others).Error; err != nil {
				return fmt.Errorf("zones of the hosts of aggregate %d: %w", id, err)
			}
			var conflicting []string
			for _, m := range others {
				v := aggregateView(Aggregate{Metadata: m}, nil)
				if z := v.Zone(); z != "" && z != zone && !slices.Contains(conflicting, z) {
					conflicting = append(conflicting, z)
				}
			}
			if len(conflicting) > 0 {
				return invalid(fmt.Sprintf("One or more hosts already in availability zone(s) %v", conflicting))
			}
		}
		enc, _ := json.Marshal(meta)
		if err := tx.Model(&Aggregate{}).Where("id = ?", id).
			Updates(map[string]any{"name": agg.Name, "metadata": string(enc), "updated_at": now}).Error; err != nil {
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				return errdefs.Conflictf("Aggregate %s already exists.", agg.Name)
			}
			return fmt.Errorf("update aggregate %d: %w", id, err)
		}
		if c.AddHost != "" {
			if err := tx.Create(&AggregateHost{AggregateID: id, Host: c.AddHost}).Error; err != nil {
				return fmt.Errorf("add host %s to aggregate %d: %w", c.AddHost, id, err)
			}
		}
		if c.RemoveHost != "" {
			if err := tx.Where("aggregate_id = ? AND host = ?", id, c.RemoveHost).Delete(&AggregateHost{}).Error; err != nil {
				return fmt.Errorf("remove host %s from aggregate %d: %w", c.RemoveHost, id, err)
			}
		}
		if err := syncHostZones(tx, concerned, invalid); err != nil {
			return err
		}
		out, err = loadAggregate(tx, id, false)
		return err
	})
	return out, err
}

// DeleteAggregate deletes aggregate id; one that still has hosts is
// refused as Nova does (InvalidArgument).
func (s *Store) DeleteAggregate(ctx context.Context, id uint) error {
	return s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		agg, err := loadAggregate(tx, id, true)
		if err != nil {
			return err
		}
		if len(agg.Hosts) > 0 {
			return errdefs.InvalidArgumentf("Cannot remove aggregate %d. Reason: Host aggregate is not empty.", id)
		}
		if err := tx.Where("id = ?", id).Delete(&Aggregate{}).Error; err != nil {
			return fmt.Errorf("delete aggregate %d: %w", id, err)
		}
		return nil
	})
}

// lockComputeHost locks host's compute service row (a host's memberships
// change one transaction at a time); an unknown host is Nova's 404.
func lockComputeHost(tx *gorm.DB, host string) error {
	var svc Service
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Select("id").
		Where("host = ? AND binary_name = ?", host, ComputeBinary).First(&svc).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return errdefs.NotFoundf("Compute host %s could not be found.", host)
	}
	if err != nil {
		return fmt.Errorf("lock host %s: %w", host, err)
	}
	return nil
}

// nonEmpty keeps an IN list valid SQL when it has no element.
func nonEmpty(hosts []string) []string {
	if len(hosts) == 0 {
		return []string{""}
	}
	return hosts
}

// syncHostZones writes each host's zone (its zoned aggregate's, else its
// agent's, else nova) to its compute service row. A host whose zone would
// change while servers live on it is refused through invalid.
func syncHostZones(tx *gorm.DB, hosts []string, invalid func(reason string) error) error {
	for _, h := range hosts {
		var svc Service
		if err := tx.Select("id", "zone", "agent_zone").Where("host = ? AND binary_name = ?", h, ComputeBinary).
			Limit(1).Find(&svc).Error; err != nil {
			return fmt.Errorf("zone of %s: %w", h, err)
		}
		if svc.ID == 0 {
			continue // the host's service went away; nothing to write
		}
		var metas []string
		if err := tx.Raw(`SELECT a.metadata FROM aggregates a JOIN aggregate_hosts h ON h.aggregate_id = a.id
			WHERE h.host = ? ORDER BY a.id`, h).Scan(&metas).Error; err != nil {
			return fmt.Errorf("aggregates of %s: %w", h, err)
		}
		zone := svc.AgentZone
		for _, m := range metas {
			v := aggregateView(Aggregate{Metadata: m}, nil)
			if z := v.Zone(); z != "" {
				zone = z
				break
			}
		}
		if zone == "" {
			zone = defaultZone
		}
		current := svc.Zone
		if current == "" {
			current = defaultZone
		}
		if zone == current {
			continue
		}
		var n int64
		if err := tx.Model(&Instance{}).Where("host = ? AND deleted_at IS NULL", h).Count(&n).Error; err != nil {
			return fmt.Errorf("servers on %s: %w", h, err)
		}
		if n > 0 {
			return invalid("One or more hosts contain instances in this zone")
		}
		if err := tx.Model(&Service{}).Where("id = ?", svc.ID).Update("zone", zone).Error; err != nil {
			return fmt.Errorf("set zone of %s: %w", h, err)
		}
	}
	return nil
}
