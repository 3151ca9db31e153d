package store

// Security groups (Neutron's security-group extension): a project's
// groups, their rules, and which ports are members. Every project has a
// "default" group, made on first use with Neutron's default rules (all
// egress, ingress from the group's own members); its id and its rules'
// ids are derived from the project, so they are the same ids the API
// showed before groups were stored.
//
// What matters under concurrency is the database's: one default group per
// project (unique DefaultFor), a rule is checked for duplicates and
// inserted while its group's row is locked, and quota checks hold the
// project's network quota lock (NetworkQuotaGuard) like ports do.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// SecurityGroup is a named set of rules ports are members of.
type SecurityGroup struct {
	ID          string `gorm:"primaryKey;size:64"`
	ProjectID   string `gorm:"size:64;index"`
	Name        string `gorm:"size:255;index"`
	Description string
	Stateful    bool
	// DefaultFor is the project whose "default" group this is (nil for
	// every other group): unique, so a project has one.
	DefaultFor *string `gorm:"size:64;uniqueIndex"`
	// Tags are the resource's tags (standard-attr-tag): a sorted JSON
	// list of distinct strings; read with DecodeTags.
	Tags           string
	RevisionNumber int
	CreatedAt      time.Time
	UpdatedAt      time.Time

	Rules []SecurityGroupRule `gorm:"foreignKey:SecurityGroupID;constraint:OnDelete:CASCADE"`
}

// SecurityGroupRule allows one kind of traffic in or out of the group's
// members. Protocol is as the API was given it (a name such as "tcp" or
// a number as a string), nil for any; for ICMP the port range holds the
// type (min) and code (max).
type SecurityGroupRule struct {
	ID              string  `gorm:"primaryKey;size:64"`
	SecurityGroupID string  `gorm:"size:64;index"`
	ProjectID       string  `gorm:"size:64;index"`
	Direction       string  `gorm:"size:8"` // ingress | egress
	EtherType       string  `gorm:"size:8"` // IPv4 | IPv6
	Protocol        *string `gorm:"size:32"`
	PortRangeMin    *int
	PortRangeMax    *int
	RemoteIPPrefix  *string `gorm:"column:remote_ip_prefix;size:64"`
	RemoteGroupID   *string `gorm:"size:64;index"`
	Description     string
	RevisionNumber  int
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// PortSecurityGroup makes a port a member of a group.
type PortSecurityGroup struct {
	PortID          string `gorm:"primaryKey;size:64"`
	SecurityGroupID string `gorm:"primaryKey;size:64;index"`
}

// Security group errors (Neutron's types).
var (
	ErrSecurityGroupNotFound      = errdefs.Class{Kind: errdefs.ErrNotFound, Reason: "SecurityGroupNotFound"}
	ErrSecurityGroupRuleNotFound  = errdefs.Class{Kind: errdefs.ErrNotFound, Reason: "SecurityGroupRuleNotFound"}
	ErrSecurityGroupRuleExists    = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "SecurityGroupRuleExists"}
	ErrSecurityGroupInUse         = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "SecurityGroupInUse"}
	ErrSecurityGroupRemoveDefault = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "SecurityGroupCannotRemoveDefault"}
	ErrSecurityGroupUpdateDefault = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "SecurityGroupCannotUpdateDefault"}
	ErrSecurityGroupDefaultExists = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "SecurityGroupDefaultAlreadyExists"}
	ErrPortSecurityHasGroups      = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "PortSecurityPortHasSecurityGroup"}
	ErrPortSecurityRequired       = errdefs.Class{Kind: errdefs.ErrInvalidArgument, Reason: "PortSecurityAndIPRequiredForSecurityGroups"}
	ErrSecurityGroupRuleInvalid   = errdefs.Class{Kind: errdefs.ErrInvalidArgument, Reason: "SecurityGroupRuleParameterConflict"}
)

func sgNotFound(id string) error {
	return netErr(ErrSecurityGroupNotFound, "Security group %s does not exist", id)
}

// sgNamespace derives the ids of each project's default group and its
// rules: the ids the API showed when the group was only synthesized.
var sgNamespace = uuid.MustParse("5b0c7d0e-3f4e-4c55-9d39-6f3b7c1ea1d0")

// DefaultSecurityGroupID is the id of project's default group.
func DefaultSecurityGroupID(project string) string {
	return uuid.NewSHA1(sgNamespace, []byte("sg:"+project)).String()
}

// defaultGroup is project's default group with Neutron's default rules.
func defaultGroup(project string, now time.Time) *SecurityGroup {
	id := DefaultSecurityGroupID(project)
	p := project
	g := &SecurityGroup{ID: id, ProjectID: project, Name: "default", Description: "Default security group",
		Stateful: true, DefaultFor: &p, RevisionNumber: 1, CreatedAt: now, UpdatedAt: now}
	for _, r := range []struct{ dir, eth string }{{"egress", "IPv4"}, {"egress", "IPv6"}, {"ingress", "IPv4"}, {"ingress", "IPv6"}} {
		rule := SecurityGroupRule{ID: uuid.NewSHA1(sgNamespace, []byte("rule:"+project+":"+r.dir+":"+r.eth)).String(),
			SecurityGroupID: id, ProjectID: project, Direction: r.dir, EtherType: r.eth, CreatedAt: now, UpdatedAt: now}
		if r.dir == "ingress" {
			rule.RemoteGroupID = &id
		}
		g.Rules = append(g.Rules, rule)
	}
	return g
}

// EnsureDefaultSecurityGroup creates project's default group unless it
// exists, and returns its id. It is not counted against the quota (as in
// Neutron, every project has one).
func (s *Store) EnsureDefaultSecurityGroup(ctx context.Context, project string) (string, error) {
	var id string
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		id, err = ensureDefaultGroup(tx, project)
		return err
	})
	return id, err
}

func ensureDefaultGroup(tx *gorm.DB, project string) (string, error) {
	id := DefaultSecurityGroupID(project)
	var n int64
	if err := tx.Model(&SecurityGroup{}).Where("id = ?", id).Count(&n).Error; err != nil {
		return "", fmt.Errorf("default security group of %s: %w", project, err)
	}
	if n > 0 {
		return id, nil
	}
	g := defaultGroup(project, time.Now().UTC())
	// A savepoint: a concurrent first use inserting the same group makes
	// this insert fail, which must not abort the caller's transaction.
	err := tx.Transaction(func(sp *gorm.DB) error {
		if err := sp.Omit(clause.Associations).Create(g).Error; err != nil {
			return err
		}
		return sp.Create(&g.Rules).Error
	})
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return id, nil
	}
	if err != nil {
		return "", fmt.Errorf("create default security group of %s: %w", project, err)
	}
	return id, nil
}

// CreateSecurityGroup stores g (its ID, revision and timestamps filled in)
// with Neutron's default egress rules (one per ether type), under guards
// (the project's security_group quota, then its security_group_rule
// quota for the two rules).
func (s *Store) CreateSecurityGroup(ctx context.Context, g *SecurityGroup, guards ...Guard) error {
	if g.ID == "" {
		g.ID = uuid.NewString()
	}
	now := time.Now().UTC()
	g.CreatedAt, g.UpdatedAt, g.RevisionNumber, g.DefaultFor = now, now, 1, nil
	g.Rules = nil
	for _, eth := range []string{"IPv4", "IPv6"} {
		g.Rules = append(g.Rules, SecurityGroupRule{ID: uuid.NewString(), SecurityGroupID: g.ID, ProjectID: g.ProjectID,
			Direction: "egress", EtherType: eth, CreatedAt: now, UpdatedAt: now})
	}
	return s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := runGuards(tx, guards); err != nil {
			return err
		}
		if err := tx.Omit(clause.Associations).Create(g).Error; err != nil {
			return fmt.Errorf("create security group: %w", err)
		}
		if err := tx.Create(&g.Rules).Error; err != nil {
			return fmt.Errorf("create security group %s: rules: %w", g.ID, err)
		}
		return nil
	})
}

func getGroup(tx *gorm.DB, id string) (*SecurityGroup, error) {
	var g SecurityGroup
	err := tx.Preload("Rules", func(db *gorm.DB) *gorm.DB { return db.Order("created_at, id") }).
		Where("id = ?", id).First(&g).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, sgNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("get security group %s: %w", id, err)
	}
	return &g, nil
}

// GetSecurityGroup returns a group with its rules.
// SecurityGroupNames maps each of ids that exists to its group's name, in
// one query per thousand ids (a page of servers' views).
func (s *Store) SecurityGroupNames(ctx context.Context, ids []string) (map[string]string, error) {
	out := map[string]string{}
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	for chunk := range slices.Chunk(ids, 1000) {
		var rows []struct{ ID, Name string }
		if err := s.WithContext(ctx).Model(&SecurityGroup{}).Select("id, name").Where("id IN ?", chunk).Scan(&rows).Error; err != nil {
			return nil, fmt.Errorf("names of %d security groups: %w", len(chunk), err)
		}
		for _, r := range rows {
			out[r.ID] = r.Name
		}
	}
	return out, nil
}

func (s *Store) GetSecurityGroup(ctx context.Context, id string) (*SecurityGroup, error) {
	return getGroup(s.WithContext(ctx), id)
}

// ListSecurityGroups returns the groups of project ("" = all) with their
// rules, oldest first.
func (s *Store) ListSecurityGroups(ctx context.Context, project string) ([]SecurityGroup, error) {
	q := s.WithContext(ctx).Preload("Rules", func(db *gorm.DB) *gorm.DB { return db.Order("created_at, id") }).
		Order("created_at, id")
	if project != "" {
		q = q.Where("project_id = ?", project)
	}
	var out []SecurityGroup
	if err := q.Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list security groups: %w", err)
	}
	return out, nil
}

// SecurityGroupUpdate changes a group; nil fields are left alone.
type SecurityGroupUpdate struct {
	Name, Description *string
	Stateful          *bool
	// IfRevision: as PortUpdate's.
	IfRevision *int
}

// UpdateSecurityGroup applies u and bumps the revision. The default
// group keeps its name (ErrSecurityGroupUpdateDefault).
func (s *Store) UpdateSecurityGroup(ctx context.Context, id string, u SecurityGroupUpdate) (*SecurityGroup, error) {
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		g, err := getGroup(tx.Clauses(clause.Locking{Strength: "UPDATE"}), id)
		if err != nil {
			return err
		}
		if err := CheckRevision(u.IfRevision, g.RevisionNumber); err != nil {
			return err
		}
		if u.Name != nil && *u.Name != g.Name {
			if g.DefaultFor != nil {
				return netErr(ErrSecurityGroupUpdateDefault, "Updating default security group not allowed.")
			}
			if *u.Name == "default" {
				return netErr(ErrSecurityGroupDefaultExists, "Default security group already exists.")
			}
			g.Name = *u.Name
		}
		if u.Description != nil {
			g.Description = *u.Description
		}
		if u.Stateful != nil && *u.Stateful != g.Stateful {
			var n int64
			if err := tx.Model(&PortSecurityGroup{}).Where("security_group_id = ?", id).Count(&n).Error; err != nil {
				return fmt.Errorf("update security group %s: members: %w", id, err)
			}
			if n > 0 {
				return netErr(ErrSecurityGroupInUse, "Security Group %s in use.", id)
			}
			g.Stateful = *u.Stateful
		}
		g.RevisionNumber++
		g.UpdatedAt = time.Now().UTC()
		if err := tx.Omit(clause.Associations).Save(g).Error; err != nil {
			return fmt.Errorf("update security group %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.GetSecurityGroup(ctx, id)
}

// DeleteSecurityGroup deletes a group and its rules, and the rules of
// other groups that name it as their remote group (as Neutron does). A
// group ports are members of is ErrSecurityGroupInUse; a project's
// default group is ErrSecurityGroupRemoveDefault unless admin.
func (s *Store) DeleteSecurityGroup(ctx context.Context, id string, admin bool) (affected []string, err error) {
	err = s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		g, err := getGroup(tx.Clauses(clause.Locking{Strength: "UPDATE"}), id)
		if err != nil {
			return err
		}
		if g.DefaultFor != nil && !admin {
			return netErr(ErrSecurityGroupRemoveDefault, "Insufficient rights for removing default security group.")
		}
		var n int64
		if err := tx.Model(&PortSecurityGroup{}).Where("security_group_id = ?", id).Count(&n).Error; err != nil {
			return fmt.Errorf("delete security group %s: members: %w", id, err)
		}
		if n > 0 {
			return netErr(ErrSecurityGroupInUse, "Security Group %s in use.", id)
		}
		// Groups whose rules named this one change: their members'
		// filters must be recomputed.
		var others []string
		if err := tx.Model(&SecurityGroupRule{}).Where("remote_group_id = ? AND security_group_id <> ?", id, id).
			Distinct().Pluck("security_group_id", &others).Error; err != nil {
			return fmt.Errorf("delete security group %s: referencing groups: %w", id, err)
		}
		if affected, err = portsOfGroups(tx, others); err != nil {
			return err
		}
		if err := tx.Where("security_group_id = ? OR remote_group_id = ?", id, id).Delete(&SecurityGroupRule{}).Error; err != nil {
			return fmt.Errorf("delete security group %s: rules: %w", id, err)
		}
		if err := tx.Where("id = ?", id).Delete(&SecurityGroup{}).Error; err != nil {
			return fmt.Errorf("delete security group %s: %w", id, err)
		}
		return nil
	})
	return affected, err
}

// ---- rules -----------------------------------------------------------------

// ProtocolNumbers are the IP protocol names Neutron accepts, by number.
var ProtocolNumbers = map[string]int{"ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0,
	"icmp": 1, "igmp": 2, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58,
	"ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132,
	"tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112}

// ProtocolNumber is the IP protocol number of a rule's protocol (a name
// or a number); -1 for any (nil, "any", "").
func ProtocolNumber(p *string) (int, error) {
	if p == nil || *p == "" || strings.EqualFold(*p, "any") {
		return -1, nil
	}
	if n, ok := ProtocolNumbers[strings.ToLower(*p)]; ok {
		return n, nil
	}
	n, err := strconv.Atoi(*p)
	if err != nil || n < 0 || n > 255 {
		return 0, netErr(errdefs.Class{Kind: errdefs.ErrInvalidArgument, Reason: "SecurityGroupRuleInvalidProtocol"},
			"Security group rule protocol %s not supported. Only protocol values [%s] and integer representations [0 to 255] are supported.",
			*p, "ah, dccp, egp, esp, gre, hopopt, icmp, igmp, ipip, ipv6-encap, ipv6-frag, ipv6-icmp, icmpv6, ipv6-nonxt, ipv6-opts, ipv6-route, ospf, pgm, rsvp, sctp, tcp, udp, udplite, vrrp")
	}
	return n, nil
}

// portProtocols take a port range (TCP, UDP, UDP-Lite, SCTP, DCCP).
func portProtocol(n int) bool { return n == 6 || n == 17 || n == 136 || n == 132 || n == 33 }

// icmpProtocol reports whether n is ICMP or ICMPv6 (port range = type/code).
func icmpProtocol(n int) bool { return n == 1 || n == 58 }

// NormalizeRule checks a rule as Neutron's validation does and fills in
// its defaults (ether type IPv4, protocol names lower-cased, "any"
// protocol as nil, remote_ip_prefix in canonical form).
func NormalizeRule(r *SecurityGroupRule) error {
	bad := func(reason, format string, args ...any) error {
		return netErr(errdefs.Class{Kind: errdefs.ErrInvalidArgument, Reason: reason}, format, args...)
	}
	if r.Direction != "ingress" && r.Direction != "egress" {
		return InvalidInput("%s is not in valid_values", r.Direction)
	}
	switch strings.ToLower(r.EtherType) {
	case "":
		r.EtherType = "IPv4"
	case "ipv4":
		r.EtherType = "IPv4"
	case "ipv6":
		r.EtherType = "IPv6"
	default:
		return bad("SecurityGroupRuleInvalidEtherType", "Security group rule for ethertype '%s' not supported. Allowed values are ['IPv4', 'IPv6'].", r.EtherType)
	}
	if r.Protocol != nil {
		v := strings.ToLower(strings.TrimSpace(*r.Protocol))
		if v == "" || v == "any" {
			r.Protocol = nil
		} else {
			r.Protocol = &v
		}
	}
	proto, err := ProtocolNumber(r.Protocol)
	if err != nil {
		return err
	}
	if r.EtherType == "IPv4" && proto == 58 {
		return bad("SecurityGroupEthertypeConflictWithProtocol",
			"Invalid ethertype %s for protocol %s.", r.EtherType, *r.Protocol)
	}
	switch {
	case r.PortRangeMin == nil && r.PortRangeMax == nil:
	case proto < 0:
		return bad("SecurityGroupProtocolRequiredWithPorts", "Must also specify protocol if port range is given.")
	case portProtocol(proto):
		if r.PortRangeMin == nil || r.PortRangeMax == nil || *r.PortRangeMin > *r.PortRangeMax {
			return bad("SecurityGroupInvalidPortRange", "For TCP/UDP protocols, port_range_min must be <= port_range_max")
		}
		for _, p := range []int{*r.PortRangeMin, *r.PortRangeMax} {
			if p < 1 || p > 65535 {
				return bad("SecurityGroupInvalidPortValue", "Invalid value for port %d.", p)
			}
		}
	case icmpProtocol(proto):
		if r.PortRangeMin == nil {
			return bad("SecurityGroupMissingIcmpType", "ICMP code (port-range-max) %d is provided but ICMP type (port-range-min) is missing.", *r.PortRangeMax)
		}
		for _, f := range []struct {
			name string
			v    *int
		}{{"type", r.PortRangeMin}, {"code", r.PortRangeMax}} {
			if f.v != nil && (*f.v < 0 || *f.v > 255) {
				return bad("SecurityGroupInvalidIcmpValue", "Invalid value for ICMP %s (port-range-min): %d. It must be 0 to 255.", f.name, *f.v)
			}
		}
	default:
		return bad("SecurityGroupInvalidProtocolForPortRange", "Invalid protocol %s for port range, only supported for TCP, UDP, UDPLITE, SCTP and DCCP.", *r.Protocol)
	}
	if r.RemoteIPPrefix != nil && r.RemoteGroupID != nil {
		return bad("SecurityGroupRemoteGroupAndRemoteIpPrefix", "Only remote_ip_prefix or remote_group_id may be provided.")
	}
	if r.RemoteIPPrefix != nil {
		p, err := netip.ParsePrefix(strings.TrimSpace(*r.RemoteIPPrefix))
		if err != nil {
			a, aerr := netip.ParseAddr(strings.TrimSpace(*r.RemoteIPPrefix))
			if aerr != nil {
				return InvalidInput("'%s' is not a valid IP subnet", *r.RemoteIPPrefix)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4() != (r.EtherType == "IPv4") {
			return netErr(ErrSecurityGroupRuleInvalid, "Conflicting value ethertype %s for CIDR %s", r.EtherType, *r.RemoteIPPrefix)
		}
		v := p.String()
		r.RemoteIPPrefix = &v
	}
	return nil
}

// NormalizedCIDR is the rule's remote prefix with the host bits cleared.
func (r *SecurityGroupRule) NormalizedCIDR() *string {
	if r.RemoteIPPrefix == nil {
		return nil
	}
	p, err := netip.ParsePrefix(*r.RemoteIPPrefix)
	if err != nil {
		return nil
	}
	v := p.Masked().String()
	return &v
}

// sameRule reports whether two rules allow the same traffic (Neutron's
// duplicate check: everything but ids and descriptions).
func sameRule(a, b *SecurityGroupRule) bool {
	eqs := func(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	eqi := func(x, y *int) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	pa, _ := ProtocolNumber(a.Protocol)
	pb, _ := ProtocolNumber(b.Protocol)
	return a.Direction == b.Direction && a.EtherType == b.EtherType && pa == pb &&
		eqi(a.PortRangeMin, b.PortRangeMin) && eqi(a.PortRangeMax, b.PortRangeMax) &&
		eqs(a.NormalizedCIDR(), b.NormalizedCIDR()) && eqs(a.RemoteGroupID, b.RemoteGroupID)
}

// CreateSecurityGroupRule stores a rule NormalizeRule accepted, after
// guards (the rule quota of the group's project), with its group's row
// locked: a duplicate of an existing rule is ErrSecurityGroupRuleExists.
// The group's revision is bumped. It returns the ports whose filters
// change (the group's members).
func (s *Store) CreateSecurityGroupRule(ctx context.Context, r *SecurityGroupRule, guards ...Guard) ([]string, error) {
	if r.ID == "" {
		r.ID = uuid.NewString()
	}
	now := time.Now().UTC()
	r.CreatedAt, r.UpdatedAt = now, now
	var affected []string
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := runGuards(tx, guards); err != nil {
			return err
		}
		g, err := getGroup(tx.Clauses(clause.Locking{Strength: "UPDATE"}), r.SecurityGroupID)
		if err != nil {
			return err
		}
		for i := range g.Rules {
			if sameRule(&g.Rules[i], r) {
				return netErr(ErrSecurityGroupRuleExists, "Security group rule already exists. Rule id is %s.", g.Rules[i].ID)
			}
		}
		if err := tx.Create(r).Error; err != nil {
			return fmt.Errorf("create security group rule: %w", err)
		}
		if err := bumpGroup(tx, g.ID); err != nil {
			return err
		}
		affected, err = portsOfGroups(tx, []string{g.ID})
		return err
	})
	return affected, err
}

func bumpGroup(tx *gorm.DB, id string) error {
	err := tx.Model(&SecurityGroup{}).Where("id = ?", id).
		Updates(map[string]any{"revision_number": gorm.Expr("revision_number + 1"), "updated_at": time.Now().UTC()}).Error
	if err != nil {
		return fmt.Errorf("bump revision of security group %s: %w", id, err)
	}
	return nil
}

// GetSecurityGroupRule returns one rule.
func (s *Store) GetSecurityGroupRule(ctx context.Context, id string) (*SecurityGroupRule, error) {
	var r SecurityGroupRule
	err := s.WithContext(ctx).Where("id = ?", id).First(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, netErr(ErrSecurityGroupRuleNotFound, "Security group rule %s does not exist", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get security group rule %s: %w", id, err)
	}
	return &r, nil
}

// DeleteSecurityGroupRule deletes a rule and bumps its group's revision;
// it returns the ports whose filters change.
func (s *Store) DeleteSecurityGroupRule(ctx context.Context, id string) ([]string, error) {
	var affected []string
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r SecurityGroupRule
		err := tx.Where("id = ?", id).First(&r).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return netErr(ErrSecurityGroupRuleNotFound, "Security group rule %s does not exist", id)
		}
		if err != nil {
			return fmt.Errorf("delete security group rule %s: %w", id, err)
		}
		res := tx.Where("id = ?", id).Delete(&SecurityGroupRule{})
		if res.Error != nil {
			return fmt.Errorf("delete security group rule %s: %w", id, res.Error)
		}
		if res.RowsAffected == 0 {
			return netErr(ErrSecurityGroupRuleNotFound, "Security group rule %s does not exist", id)
		}
		if err := bumpGroup(tx, r.SecurityGroupID); err != nil {
			return err
		}
		affected, err = portsOfGroups(tx, []string{r.SecurityGroupID})
		return err
	})
	return affected, err
}

// ---- membership ------------------------------------------------------------

// portsOfGroups returns the ports that are members of any of groups.
func portsOfGroups(tx *gorm.DB, groups []string) ([]string, error) {
	if len(groups) == 0 {
		return nil, nil
	}
	var out []string
	if err := tx.Model(&PortSecurityGroup{}).Where("security_group_id IN ?", groups).Distinct().
		Order("port_id").Pluck("port_id", &out).Error; err != nil {
		return nil, fmt.Errorf("members of security groups %v: %w", groups, err)
	}
	return out, nil
}

// PortSecurityGroupIDs returns the groups port is a member of, sorted.
func (s *Store) PortSecurityGroupIDs(ctx context.Context, portID string) ([]string, error) {
	var out []string
	if err := s.WithContext(ctx).Model(&PortSecurityGroup{}).Where("port_id = ?", portID).Order("security_group_id").
		Pluck("security_group_id", &out).Error; err != nil {
		return nil, fmt.Errorf("security groups of port %s: %w", portID, err)
	}
	return out, nil
}

// resolvePortGroups checks that every group exists and belongs to
// project (another project's group is not found, as Neutron answers);
// nil asks for project's default group (created on first use).
func resolvePortGroups(tx *gorm.DB, project string, groups *[]string) ([]string, error) {
	if groups == nil {
		id, err := ensureDefaultGroup(tx, project)
		if err != nil {
			return nil, err
		}
		return []string{id}, nil
	}
	var out []string
	for _, id := range *groups {
		if id == DefaultSecurityGroupID(project) {
			if _, err := ensureDefaultGroup(tx, project); err != nil {
				return nil, err
			}
		}
		var g SecurityGroup
		err := tx.Where("id = ?", id).First(&g).Error
		if errors.Is(err, gorm.ErrRecordNotFound) || (err == nil && g.ProjectID != project) {
			return nil, sgNotFound(id)
		}
		if err != nil {
			return nil, fmt.Errorf("security group %s: %w", id, err)
		}
		if !containsStr(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// setPortGroups replaces port's memberships with groups.
func setPortGroups(tx *gorm.DB, portID string, groups []string) error {
	if err := tx.Where("port_id = ?", portID).Delete(&PortSecurityGroup{}).Error; err != nil {
		return fmt.Errorf("security groups of port %s: %w", portID, err)
	}
	for _, g := range groups {
		if err := tx.Create(&PortSecurityGroup{PortID: portID, SecurityGroupID: g}).Error; err != nil {
			return fmt.Errorf("port %s joins security group %s: %w", portID, g, err)
		}
	}
	return nil
}

// CountSecurityGroupUsage counts the project's groups and rules.
func countSecurityGroupUsage(tx *gorm.DB, projectID string, used map[string]int) error {
	for _, m := range []struct {
		key   string
		model any
	}{{"security_group", &SecurityGroup{}}, {"security_group_rule", &SecurityGroupRule{}}} {
		var n int64
		if err := tx.Model(m.model).Where("project_id = ?", projectID).Count(&n).Error; err != nil {
			return fmt.Errorf("count %ss of project %s: %w", m.key, projectID, err)
		}
		used[m.key] = int(n)
	}
	return nil
}

// updatePortGroups applies a port update's groups to p (whose port
// security is already the updated one): groups need port security
// (ErrPortSecurityRequired), and turning port security off needs the
// groups gone in the same or an earlier update (ErrPortSecurityHasGroups).
func updatePortGroups(tx *gorm.DB, p *Port, groups *[]string) error {
	if groups == nil {
		if !p.PortSecurityEnabled && len(p.SecurityGroups) > 0 {
			return netErr(ErrPortSecurityHasGroups, "Port has security group associated. Cannot disable port security or IP address until security group is removed.")
		}
		return nil
	}
	if !p.PortSecurityEnabled && len(*groups) > 0 {
		return netErr(ErrPortSecurityRequired, "Port security must be enabled and port must have an IP address in order to use security groups.")
	}
	ids, err := resolvePortGroups(tx, p.ProjectID, groups)
	if err != nil {
		return err
	}
	if err := setPortGroups(tx, p.ID, ids); err != nil {
		return err
	}
	p.SecurityGroups = nonNil(ids)
	return nil
}

// joinDefaultGroups makes every port with port security and no group a
// member of its project's default group (migration 17).
func joinDefaultGroups(tx *gorm.DB) error {
	// Only the columns used: a "SELECT *" of ports that a connection
	// prepared before a column of ports changed (a re-run migration) fails
	// on PostgreSQL with "cached plan must not change result type".
	var ports []Port
	if err := tx.Select("id", "project_id").Where("port_security_enabled = ? AND id NOT IN (?)", true,
		tx.Model(&PortSecurityGroup{}).Select("port_id")).Find(&ports).Error; err != nil {
		return fmt.Errorf("ports without security groups: %w", err)
	}
	for _, p := range ports {
		id, err := ensureDefaultGroup(tx, p.ProjectID)
		if err != nil {
			return err
		}
		if err := tx.Create(&PortSecurityGroup{PortID: p.ID, SecurityGroupID: id}).Error; err != nil {
			return fmt.Errorf("port %s joins its default security group: %w", p.ID, err)
		}
	}
	return nil
}

// SecurityGroupWatchers returns the ports whose filters name any of
// groups as a remote group (members of groups with such rules): their
// filters change when a port joins or leaves one of groups, or changes
// its addresses.
func (s *Store) SecurityGroupWatchers(ctx context.Context, groups []string) ([]string, error) {
	if len(groups) == 0 {
		return nil, nil
	}
	tx := s.WithContext(ctx)
	var watching []string
	if err := tx.Model(&SecurityGroupRule{}).Where("remote_group_id IN ?", groups).Distinct().
		Pluck("security_group_id", &watching).Error; err != nil {
		return nil, fmt.Errorf("groups watching %v: %w", groups, err)
	}
	return portsOfGroups(tx, watching)
}

// PortFirewallSource is what a port's filter is made of: its groups with
// their rules, and the fixed IPs of the members of every group those
// rules name as remote group.
type PortFirewallSource struct {
	Groups  []SecurityGroup
	Members map[string][]string // remote group id -> member addresses
}

// PortFirewall gathers port's groups, their rules and the addresses of
// the remote groups' members.
func (s *Store) PortFirewall(ctx context.Context, port *Port) (*PortFirewallSource, error) {
	src := &PortFirewallSource{Members: map[string][]string{}}
	if len(port.SecurityGroups) == 0 {
		return src, nil
	}
	tx := s.WithContext(ctx)
	if err := tx.Preload("Rules", func(db *gorm.DB) *gorm.DB { return db.Order("created_at, id") }).
		Where("id IN ?", port.SecurityGroups).Order("id").Find(&src.Groups).Error; err != nil {
		return nil, fmt.Errorf("security groups of port %s: %w", port.ID, err)
	}
	var remotes []string
	for _, g := range src.Groups {
		for _, r := range g.Rules {
			if r.RemoteGroupID != nil && !containsStr(remotes, *r.RemoteGroupID) {
				remotes = append(remotes, *r.RemoteGroupID)
			}
		}
	}
	if len(remotes) == 0 {
		return src, nil
	}
	var rows []struct {
		SecurityGroupID string
		IPAddress       string
	}
	if err := tx.Table("port_security_groups").Select("port_security_groups.security_group_id, ip_allocations.ip_address").
		Joins("JOIN ip_allocations ON ip_allocations.port_id = port_security_groups.port_id").
		Where("port_security_groups.security_group_id IN ?", remotes).
		Order("port_security_groups.security_group_id, ip_allocations.ip_address").Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("members of remote groups of port %s: %w", port.ID, err)
	}
	for _, r := range rows {
		src.Members[r.SecurityGroupID] = append(src.Members[r.SecurityGroupID], r.IPAddress)
	}
	return src, nil
}
