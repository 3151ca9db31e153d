package store

// Networks, subnets, ports and IP address management (Neutron's data
// model, trimmed to static IPv4 addressing on VLAN and flat networks).
//
// Every guarantee that matters under concurrency is the database's:
//   - an address is handed out once: ip_allocations' primary key is
//     (subnet_id, ip_address), so allocation picks a candidate, INSERTs it
//     and retries with another one when the insert hits the key;
//   - a VLAN carries one network: networks are unique on
//     (physical_network, segmentation_id), flat networks storing 0, so a
//     physical network also carries at most one flat network;
//   - a MAC is used once per network: ports are unique on
//     (network_id, mac_address);
//   - nothing is orphaned: ports and subnets reference their network and
//     allocations their subnet (RESTRICT), so a delete racing a create fails
//     one of them instead of leaving rows behind.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Network is a Neutron network: one VLAN (or the untagged, flat segment)
// of a physical network.
type Network struct {
	ID                  string `gorm:"primaryKey;size:64"`
	Name                string `gorm:"size:255;index"`
	ProjectID           string `gorm:"size:64;index"`
	Description         string
	Shared              bool
	AdminStateUp        bool
	Status              string `gorm:"size:16"`
	MTU                 int    `gorm:"column:mtu"`
	PortSecurityEnabled bool
	NetworkType         string `gorm:"size:16"` // vlan | flat
	PhysicalNetwork     string `gorm:"size:64;uniqueIndex:ux_network_segment"`
	// SegmentationID is the VLAN id (1-4094); 0 for flat networks, which
	// the unique index then limits to one per physical network.
	SegmentationID int `gorm:"uniqueIndex:ux_network_segment"`
	// Tags are the resource's tags (standard-attr-tag): a sorted JSON
	// list of distinct strings; read with DecodeTags.
	Tags           string
	RevisionNumber int
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Subnet is an IPv4 range on a network with its allocation pools.
type Subnet struct {
	ID          string `gorm:"primaryKey;size:64"`
	NetworkID   string `gorm:"size:64;index"`
	ProjectID   string `gorm:"size:64;index"`
	Name        string `gorm:"size:255;index"`
	Description string
	IPVersion   int     `gorm:"column:ip_version"`
	CIDR        string  `gorm:"column:cidr;size:64"`
	GatewayIP   *string `gorm:"column:gateway_ip;size:64"` // nil: no gateway
	// AllocationPools, DNSNameservers and HostRoutes are JSON; use Pools(),
	// DNS() and Routes() to read them.
	AllocationPools string
	DNSNameservers  string `gorm:"column:dns_nameservers"`
	HostRoutes      string
	// EnableDHCP is stored because clients set and read it; Capsule never
	// runs DHCP (addresses are configured statically in the container).
	EnableDHCP bool `gorm:"column:enable_dhcp"`
	// Tags are the resource's tags (standard-attr-tag): a sorted JSON
	// list of distinct strings; read with DecodeTags.
	Tags           string
	RevisionNumber int
	CreatedAt      time.Time
	UpdatedAt      time.Time

	Network *Network `gorm:"foreignKey:NetworkID;constraint:OnDelete:CASCADE" json:"-"`
}

// Port is a NIC on a network: a MAC and its fixed IPs, bound to a device
// (a server) on a host.
type Port struct {
	ID                  string `gorm:"primaryKey;size:64"`
	NetworkID           string `gorm:"size:64;index;uniqueIndex:ux_port_mac"`
	ProjectID           string `gorm:"size:64;index"`
	Name                string `gorm:"size:255"`
	Description         string
	MACAddress          string `gorm:"column:mac_address;size:17;uniqueIndex:ux_port_mac"`
	DeviceID            string `gorm:"size:255;index"`
	DeviceOwner         string `gorm:"size:255"`
	BindingHostID       string `gorm:"column:binding_host_id;size:255;index"`
	Status              string `gorm:"size:16"` // ACTIVE when bound to a host, else DOWN
	AdminStateUp        bool
	PortSecurityEnabled bool
	// ComputeBound says the Compute API bound the port to its device (a
	// server boot or an interface attach): only such a port, of the
	// server's own project, is one of the server's NICs (ServerPorts).
	// device_id itself is a label anyone may write through the Networking
	// API, as in Neutron; it never plugs anything.
	ComputeBound bool
	// Tags are the resource's tags (standard-attr-tag): a sorted JSON
	// list of distinct strings; read with DecodeTags.
	Tags           string
	RevisionNumber int
	CreatedAt      time.Time
	UpdatedAt      time.Time
	// AllowedAddressPairs is a JSON list of AddressPair; read it with
	// AddressPairs().
	AllowedAddressPairs string
	// BindingProfile is binding:profile, a JSON object an admin sets for
	// the binding's driver ("" = {}); Capsule's OVS binding uses none of
	// it, it is kept and shown as Neutron does.
	BindingProfile string

	// SecurityGroups are the ids of the groups the port is a member of
	// (port_security_groups), sorted; loaded with the port.
	SecurityGroups []string `gorm:"-"`
	// FixedIPs are loaded by every store read of a port, ordered by
	// subnet then address.
	FixedIPs []IPAllocation `gorm:"foreignKey:PortID;constraint:OnDelete:CASCADE"`
	Network  *Network       `gorm:"foreignKey:NetworkID;constraint:OnDelete:RESTRICT" json:"-"`
}

// IPAllocation is one fixed IP of a port. The primary key is what makes
// double allocation impossible.
type IPAllocation struct {
	SubnetID  string `gorm:"primaryKey;size:64"`
	IPAddress string `gorm:"column:ip_address;primaryKey;size:64"`
	PortID    string `gorm:"size:64;index"`
	NetworkID string `gorm:"size:64;index"`

	Subnet *Subnet `gorm:"foreignKey:SubnetID;constraint:OnDelete:RESTRICT" json:"-"`
}

// Port statuses.
const (
	PortActive = "ACTIVE"
	PortDown   = "DOWN"
)

// Network types.
const (
	NetworkTypeVLAN = "vlan"
	NetworkTypeFlat = "flat"
)

// Network errors: errdefs classes whose reason is the Neutron error type
// an API reports. Make one with netErr (Neutron's message as the safe
// message); callers test errors.Is(err, store.ErrPortNotFound) for the
// class, or the kind (errdefs.IsNotFound, store.ErrNotFound) for all.
var (
	ErrNetworkNotFound         = errdefs.Class{Kind: errdefs.ErrNotFound, Reason: "NetworkNotFound"}
	ErrSubnetNotFound          = errdefs.Class{Kind: errdefs.ErrNotFound, Reason: "SubnetNotFound"}
	ErrPortNotFound            = errdefs.Class{Kind: errdefs.ErrNotFound, Reason: "PortNotFound"}
	ErrInvalidInput            = errdefs.Class{Kind: errdefs.ErrInvalidArgument, Reason: "InvalidInput"}
	ErrInvalidIPForSubnet      = errdefs.Class{Kind: errdefs.ErrInvalidArgument, Reason: "InvalidIpForSubnet"}
	ErrInvalidIPForNetwork     = errdefs.Class{Kind: errdefs.ErrInvalidArgument, Reason: "InvalidIpForNetwork"}
	ErrIPAddressInUse          = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "IpAddressInUse"}
	ErrMACAddressInUse         = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "MacAddressInUse"}
	ErrIPGenerationFailure     = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "IpAddressGenerationFailure"}
	ErrVLANInUse               = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "VlanIdInUse"}
	ErrFlatNetworkInUse        = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "FlatNetworkInUse"}
	ErrNoNetworkAvailable      = errdefs.Class{Kind: errdefs.ErrUnavailable, Reason: "NoNetworkAvailable"}
	ErrNetworkInUse            = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "NetworkInUse"}
	ErrSubnetInUse             = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "SubnetInUse"}
	ErrGatewayConflictWithPool = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "GatewayConflictWithAllocationPools"}
	ErrGatewayIPInUse          = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "GatewayIpInUse"}
	// ErrRevisionConstraint is Neutron's 412: an update or delete sent
	// If-Match: revision_number=N and the resource is at another revision.
	ErrRevisionConstraint = errdefs.Class{Kind: errdefs.ErrFailedPrecondition, Reason: "RevisionNumberConstraintFailed"}
)

// CheckRevision is nil when want is nil (no If-Match) or current; else
// ErrRevisionConstraint. Updates call it on the row they locked, so the
// compare and the change are one step.
func CheckRevision(want *int, current int) error {
	if want == nil || *want == current {
		return nil
	}
	return netErr(ErrRevisionConstraint, "Constrained to %d, but current revision is %d", *want, current)
}

func netErr(class errdefs.Class, format string, args ...any) error {
	return class.Newf(format, args...)
}

// InvalidInput is a 400 "Invalid input for operation: ..." error.
func InvalidInput(format string, args ...any) error {
	return netErr(ErrInvalidInput, "Invalid input for operation: "+format+".", args...)
}

// ---- JSON columns -----------------------------------------------------

// AllocationPool is an inclusive range of addresses IPAM hands out.
type AllocationPool struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// HostRoute is a static route a subnet announces.
type HostRoute struct {
	Destination string `json:"destination"`
	NextHop     string `json:"nexthop"`
}

func decodeJSONList[T any](s string) []T {
	out := []T{}
	if s != "" {
		_ = json.Unmarshal([]byte(s), &out)
	}
	return out
}

func encodeJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Pools returns the subnet's allocation pools.
func (s *Subnet) Pools() []AllocationPool { return decodeJSONList[AllocationPool](s.AllocationPools) }

// DNS returns the subnet's DNS name servers.
func (s *Subnet) DNS() []string { return decodeJSONList[string](s.DNSNameservers) }

// Routes returns the subnet's host routes.
func (s *Subnet) Routes() []HostRoute { return decodeJSONList[HostRoute](s.HostRoutes) }

// SetPools stores p as the allocation pools.
func (s *Subnet) SetPools(p []AllocationPool) { s.AllocationPools = encodeJSON(nonNil(p)) }

// SetDNS stores the DNS name servers.
func (s *Subnet) SetDNS(d []string) { s.DNSNameservers = encodeJSON(nonNil(d)) }

// SetRoutes stores the host routes.
func (s *Subnet) SetRoutes(r []HostRoute) { s.HostRoutes = encodeJSON(nonNil(r)) }

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// ---- address arithmetic ---------------------------------------------------

func ip4(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func addr4(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// ParseIPv4 parses an IPv4 address in dotted form.
func ParseIPv4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("'%s' is not a valid IPv4 address", s)
	}
	return a, nil
}

// hostRange is the first and last usable host of a prefix: the network
// and broadcast addresses are never allocatable.
func hostRange(p netip.Prefix) (first, last uint32) {
	base := ip4(p.Masked().Addr())
	size := uint32(1) << (32 - p.Bits())
	return base + 1, base + size - 2
}

type ipRange struct{ lo, hi uint32 }

// ValidateSubnet checks and completes a subnet before it is stored: a
// canonical IPv4 CIDR (/8 to /30), a gateway inside it (nil = none;
// gatewayDefault asks for the first host), allocation pools inside the
// CIDR, not overlapping and not holding the gateway (default: the CIDR's
// hosts minus the gateway), valid DNS servers and host routes. It fills in
// CIDR, GatewayIP and the JSON columns.
func ValidateSubnet(s *Subnet, gatewayDefault bool, pools []AllocationPool, dns []string, routes []HostRoute) error {
	if s.IPVersion == 0 {
		s.IPVersion = 4
	}
	if s.IPVersion != 4 {
		return InvalidInput("ip_version %d is not supported, only 4", s.IPVersion)
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(s.CIDR))
	if err != nil || !p.Addr().Is4() {
		return InvalidInput("'%s' is not a valid IPv4 subnet", s.CIDR)
	}
	if p.Masked() != p {
		return InvalidInput("'%s' isn't a recognized IP subnet cidr, '%s' is recommended", s.CIDR, p.Masked())
	}
	if p.Bits() < 8 || p.Bits() > 30 {
		return InvalidInput("the prefix length of %s must be between 8 and 30", p)
	}
	s.CIDR = p.String()
	first, last := hostRange(p)
	if gatewayDefault {
		gw := addr4(first).String()
		s.GatewayIP = &gw
	}
	var gw uint32
	hasGW := s.GatewayIP != nil
	if hasGW {
		if gw, err = checkGateway(p, *s.GatewayIP); err != nil {
			return err
		}
		g := addr4(gw).String()
		s.GatewayIP = &g
	}
	var rs []ipRange
	if pools == nil {
		// Default: every host but the gateway, split around it.
		switch {
		case !hasGW || gw < first || gw > last:
			rs = []ipRange{{first, last}}
		default:
			if gw > first {
				rs = append(rs, ipRange{first, gw - 1})
			}
			if gw < last {
				rs = append(rs, ipRange{gw + 1, last})
			}
		}
	} else {
		if rs, err = parsePools(p, pools); err != nil {
			return err
		}
		if hasGW {
			for _, r := range rs {
				if gw >= r.lo && gw <= r.hi {
					return netErr(ErrGatewayConflictWithPool, "Gateway ip %s conflicts with allocation pool %s-%s.",
						addr4(gw), addr4(r.lo), addr4(r.hi))
				}
			}
		}
	}
	out := make([]AllocationPool, 0, len(rs))
	for _, r := range rs {
		out = append(out, AllocationPool{Start: addr4(r.lo).String(), End: addr4(r.hi).String()})
	}
	s.SetPools(out)
	if err := checkDNS(dns); err != nil {
		return err
	}
	s.SetDNS(dns)
	if err := checkRoutes(routes); err != nil {
		return err
	}
	s.SetRoutes(routes)
	return nil
}

func checkGateway(p netip.Prefix, gwStr string) (uint32, error) {
	a, err := ParseIPv4(gwStr)
	if err != nil {
		return 0, InvalidInput("%v", err)
	}
	g := ip4(a)
	first, last := hostRange(p)
	if !p.Contains(a) || g < first || g > last {
		return 0, InvalidInput("gateway ip %s is not a valid host address of subnet %s", a, p)
	}
	return g, nil
}

func parsePools(p netip.Prefix, pools []AllocationPool) ([]ipRange, error) {
	first, last := hostRange(p)
	var rs []ipRange
	for _, pl := range pools {
		lo, err1 := ParseIPv4(pl.Start)
		hi, err2 := ParseIPv4(pl.End)
		if err1 != nil || err2 != nil || ip4(lo) > ip4(hi) {
			return nil, InvalidInput("the allocation pool %s-%s is not valid", pl.Start, pl.End)
		}
		if ip4(lo) < first || ip4(hi) > last {
			return nil, InvalidInput("the allocation pool %s-%s spans beyond the subnet cidr %s", lo, hi, p)
		}
		rs = append(rs, ipRange{ip4(lo), ip4(hi)})
	}
	slices.SortFunc(rs, func(a, b ipRange) int { return int(int64(a.lo) - int64(b.lo)) })
	for i := 1; i < len(rs); i++ {
		if rs[i].lo <= rs[i-1].hi {
			return nil, InvalidInput("found overlapping allocation pools: %s-%s and %s-%s",
				addr4(rs[i-1].lo), addr4(rs[i-1].hi), addr4(rs[i].lo), addr4(rs[i].hi))
		}
	}
	return rs, nil
}

func checkDNS(dns []string) error {
	seen := map[string]bool{}
	for _, d := range dns {
		if _, err := netip.ParseAddr(d); err != nil {
			return InvalidInput("'%s' is not a valid nameserver", d)
		}
		if seen[d] {
			return InvalidInput("duplicate nameserver '%s'", d)
		}
		seen[d] = true
	}
	return nil
}

func checkRoutes(routes []HostRoute) error {
	for _, r := range routes {
		if _, err := netip.ParsePrefix(r.Destination); err != nil {
			return InvalidInput("'%s' is not a valid route destination", r.Destination)
		}
		if _, err := netip.ParseAddr(r.NextHop); err != nil {
			return InvalidInput("'%s' is not a valid nexthop", r.NextHop)
		}
	}
	return nil
}

// poolRanges parses a stored subnet's pools.
func (s *Subnet) poolRanges() []ipRange {
	var rs []ipRange
	for _, p := range s.Pools() {
		lo, err1 := ParseIPv4(p.Start)
		hi, err2 := ParseIPv4(p.End)
		if err1 == nil && err2 == nil {
			rs = append(rs, ipRange{ip4(lo), ip4(hi)})
		}
	}
	return rs
}

// InPools reports whether a is inside one of the subnet's pools.
func (s *Subnet) InPools(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	u := ip4(a)
	for _, r := range s.poolRanges() {
		if u >= r.lo && u <= r.hi {
			return true
		}
	}
	return false
}

// Prefix returns the subnet's CIDR.
func (s *Subnet) Prefix() netip.Prefix {
	p, _ := netip.ParsePrefix(s.CIDR)
	return p
}

// ---- MACs and ids -----------------------------------------------------

var macRE = regexp.MustCompile(`^[0-9a-f]{2}(:[0-9a-f]{2}){5}$`)

// NormalizeMAC lower-cases a MAC and checks it is a unicast address in
// colon form.
func NormalizeMAC(mac string) (string, error) {
	m := strings.ToLower(strings.TrimSpace(mac))
	m = strings.ReplaceAll(m, "-", ":")
	if !macRE.MatchString(m) {
		return "", InvalidInput("'%s' is not a valid MAC address", mac)
	}
	var first byte
	fmt.Sscanf(m[:2], "%02x", &first)
	if first&1 == 1 || m == "00:00:00:00:00:00" {
		return "", InvalidInput("'%s' is not a valid unicast MAC address", mac)
	}
	return m, nil
}

// RandomMAC returns a fa:16:3e:xx:xx:xx address (Neutron's base MAC).
func RandomMAC() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", b[0], b[1], b[2])
}

func randIntn(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		return 0
	}
	return int(v.Int64())
}

// ---- networks -----------------------------------------------------------

// VLANRange is where tenant networks get their VLAN.
type VLANRange struct {
	PhysicalNetwork string
	Min, Max        int
}

// maxInsertAttempts bounds the pick-then-insert loops: each failed
// attempt means a concurrent transaction took the candidate, so the
// next read sees it taken.
const maxInsertAttempts = 32

// CreateNetwork stores n. A vlan network with SegmentationID 0 gets the
// lowest free VLAN of tenant (ErrNoNetworkAvailable when none is left);
// an explicit segment that is taken fails with ErrVLANInUse or
// ErrFlatNetworkInUse. ID, status and timestamps are filled in when empty.
// guards (the project's network quota) run first in the transaction.
func (s *Store) CreateNetwork(ctx context.Context, n *Network, tenant VLANRange, guards ...Guard) error {
	if n.ID == "" {
		n.ID = uuid.NewString()
	}
	if n.Status == "" {
		n.Status = PortActive
	}
	if n.NetworkType == NetworkTypeFlat {
		n.SegmentationID = 0
	}
	return s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := runGuards(tx, guards); err != nil {
			return err
		}
		if n.NetworkType != NetworkTypeVLAN || n.SegmentationID != 0 {
			err := tx.Omit(clause.Associations).Create(n).Error
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				if n.NetworkType == NetworkTypeFlat {
					return netErr(ErrFlatNetworkInUse, "Unable to create the flat network. Physical network %s is in use.", n.PhysicalNetwork)
				}
				return netErr(ErrVLANInUse, "Unable to create the network. The VLAN %d on physical network %s is in use.",
					n.SegmentationID, n.PhysicalNetwork)
			}
			if err != nil {
				return fmt.Errorf("create network: %w", err)
			}
			return nil
		}
		n.PhysicalNetwork = tenant.PhysicalNetwork
		for attempt := 0; attempt < maxInsertAttempts; attempt++ {
			var used []int
			if err := tx.Model(&Network{}).Where("physical_network = ? AND segmentation_id BETWEEN ? AND ?",
				tenant.PhysicalNetwork, tenant.Min, tenant.Max).Pluck("segmentation_id", &used).Error; err != nil {
				return fmt.Errorf("create network: used VLANs: %w", err)
			}
			vid := 0
			for v := tenant.Min; v <= tenant.Max && v >= 1; v++ {
				if !slices.Contains(used, v) {
					vid = v
					break
				}
			}
			if vid == 0 {
				return netErr(ErrNoNetworkAvailable, "Unable to create the network. No tenant network is available for allocation.")
			}
			n.SegmentationID = vid
			err := tx.Transaction(func(sp *gorm.DB) error { return sp.Omit(clause.Associations).Create(n).Error })
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				continue // a concurrent create took this VLAN
			}
			if err != nil {
				return fmt.Errorf("create network: %w", err)
			}
			return nil
		}
		return netErr(ErrNoNetworkAvailable, "Unable to create the network. No tenant network could be allocated, try again.")
	})
}

// GetNetwork returns one network.
func (s *Store) GetNetwork(ctx context.Context, id string) (*Network, error) {
	return getNetwork(s.WithContext(ctx), id)
}

func getNetwork(tx *gorm.DB, id string) (*Network, error) {
	var n Network
	err := tx.Where("id = ?", id).First(&n).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, netErr(ErrNetworkNotFound, "Network %s could not be found.", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get network %s: %w", id, err)
	}
	return &n, nil
}

// ListNetworks returns every network, oldest first.
func (s *Store) ListNetworks(ctx context.Context) ([]Network, error) {
	var out []Network
	if err := s.WithContext(ctx).Order("created_at, id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	return out, nil
}

// UpdateNetwork applies change to network id and bumps its revision.
func (s *Store) UpdateNetwork(ctx context.Context, id string, change func(*Network) error) (*Network, error) {
	var n *Network
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		if n, err = getNetwork(tx.Clauses(clause.Locking{Strength: "UPDATE"}), id); err != nil {
			return err
		}
		if err := change(n); err != nil {
			return err
		}
		n.RevisionNumber++
		if err := tx.Omit(clause.Associations).Save(n).Error; err != nil {
			return fmt.Errorf("update network %s: %w", id, err)
		}
		return nil
	})
	return n, err
}

// DeleteNetwork deletes a network and its subnets; ErrNetworkInUse while
// it has ports.
func (s *Store) DeleteNetwork(ctx context.Context, id string) error {
	return s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if _, err := getNetwork(tx.Clauses(clause.Locking{Strength: "UPDATE"}), id); err != nil {
			return err
		}
		var ports int64
		if err := tx.Model(&Port{}).Where("network_id = ?", id).Count(&ports).Error; err != nil {
			return fmt.Errorf("delete network %s: count ports: %w", id, err)
		}
		if ports > 0 {
			return netErr(ErrNetworkInUse, "Unable to complete operation on network %s. There are one or more ports still in use on the network.", id)
		}
		if err := tx.Where("network_id = ?", id).Delete(&Subnet{}).Error; err != nil {
			return inUseOr(err, netErr(ErrNetworkInUse, "Unable to complete operation on network %s. There are one or more ports still in use on the network.", id),
				"delete network %s: subnets", id)
		}
		if err := tx.Where("id = ?", id).Delete(&Network{}).Error; err != nil {
			return inUseOr(err, netErr(ErrNetworkInUse, "Unable to complete operation on network %s. There are one or more ports still in use on the network.", id),
				"delete network %s", id)
		}
		return nil
	})
}

// inUseOr maps a foreign-key violation (a concurrent insert referencing
// the row) to inUse, and wraps any other error.
func inUseOr(err, inUse error, format string, args ...any) error {
	if errors.Is(err, gorm.ErrForeignKeyViolated) {
		return inUse
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

// ---- subnets --------------------------------------------------------------

// CreateSubnet stores a subnet ValidateSubnet has checked, refusing one
// that overlaps another subnet of the same network. guards (the project's
// network quota) run first in the transaction.
func (s *Store) CreateSubnet(ctx context.Context, sn *Subnet, guards ...Guard) error {
	if sn.ID == "" {
		sn.ID = uuid.NewString()
	}
	return s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := runGuards(tx, guards); err != nil {
			return err
		}
		// The row lock serialises subnet creation per network on
		// PostgreSQL, so two overlapping creates cannot both pass the check.
		if _, err := getNetwork(tx.Clauses(clause.Locking{Strength: "UPDATE"}), sn.NetworkID); err != nil {
			return err
		}
		var others []Subnet
		if err := tx.Where("network_id = ?", sn.NetworkID).Find(&others).Error; err != nil {
			return fmt.Errorf("create subnet: list subnets: %w", err)
		}
		p := sn.Prefix()
		for _, o := range others {
			if o.Prefix().Overlaps(p) {
				return InvalidInput("requested subnet with cidr: %s for network: %s overlaps with another subnet", sn.CIDR, sn.NetworkID)
			}
		}
		if err := tx.Omit(clause.Associations).Create(sn).Error; err != nil {
			if errors.Is(err, gorm.ErrForeignKeyViolated) {
				return netErr(ErrNetworkNotFound, "Network %s could not be found.", sn.NetworkID)
			}
			return fmt.Errorf("create subnet: %w", err)
		}
		return nil
	})
}

// GetSubnet returns one subnet.
func (s *Store) GetSubnet(ctx context.Context, id string) (*Subnet, error) {
	return getSubnet(s.WithContext(ctx), id)
}

func getSubnet(tx *gorm.DB, id string) (*Subnet, error) {
	var sn Subnet
	err := tx.Where("id = ?", id).First(&sn).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, netErr(ErrSubnetNotFound, "Subnet %s could not be found.", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get subnet %s: %w", id, err)
	}
	return &sn, nil
}

// ListSubnets returns the subnets of networkID ("" = all), oldest first.
func (s *Store) ListSubnets(ctx context.Context, networkID string) ([]Subnet, error) {
	q := s.WithContext(ctx).Order("created_at, id")
	if networkID != "" {
		q = q.Where("network_id = ?", networkID)
	}
	var out []Subnet
	if err := q.Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list subnets: %w", err)
	}
	return out, nil
}

// UpdateSubnet applies change (which must leave the subnet valid, see
// ValidateSubnet) and bumps the revision; a gateway that a port holds
// fails with ErrGatewayIPInUse.
func (s *Store) UpdateSubnet(ctx context.Context, id string, change func(*Subnet) error) (*Subnet, error) {
	var sn *Subnet
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		if sn, err = getSubnet(tx.Clauses(clause.Locking{Strength: "UPDATE"}), id); err != nil {
			return err
		}
		oldGW := sn.GatewayIP
		if err := change(sn); err != nil {
			return err
		}
		if sn.GatewayIP != nil && (oldGW == nil || *oldGW != *sn.GatewayIP) {
			var n int64
			if err := tx.Model(&IPAllocation{}).Where("subnet_id = ? AND ip_address = ?", id, *sn.GatewayIP).Count(&n).Error; err != nil {
				return fmt.Errorf("update subnet %s: gateway check: %w", id, err)
			}
			if n > 0 {
				return netErr(ErrGatewayIPInUse, "Current gateway ip %s already in use by port. Unable to update.", *sn.GatewayIP)
			}
		}
		sn.RevisionNumber++
		if err := tx.Omit(clause.Associations).Save(sn).Error; err != nil {
			return fmt.Errorf("update subnet %s: %w", id, err)
		}
		return nil
	})
	return sn, err
}

// DeleteSubnet deletes a subnet; ErrSubnetInUse while ports hold its IPs.
func (s *Store) DeleteSubnet(ctx context.Context, id string) error {
	inUse := netErr(ErrSubnetInUse, "Unable to complete operation on subnet %s: One or more ports have an IP allocation from this subnet.", id)
	return s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if _, err := getSubnet(tx, id); err != nil {
			return err
		}
		var n int64
		if err := tx.Model(&IPAllocation{}).Where("subnet_id = ?", id).Count(&n).Error; err != nil {
			return fmt.Errorf("delete subnet %s: count allocations: %w", id, err)
		}
		if n > 0 {
			return inUse
		}
		if err := tx.Where("id = ?", id).Delete(&Subnet{}).Error; err != nil {
			return inUseOr(err, inUse, "delete subnet %s", id)
		}
		return nil
	})
}

// ---- ports and IPAM ------------------------------------------------------

// FixedIPRequest asks for an address on a port: SubnetID and/or IP. With
// only SubnetID, IPAM picks a free address from the subnet's pools; with
// only IP, the subnet is the one of the network that contains it.
type FixedIPRequest struct {
	SubnetID string
	IP       string
}

// PortRequest describes a port to create.
type PortRequest struct {
	ID        string // "" = a new UUID
	NetworkID string
	ProjectID string
	// FixedIPs nil: one address from the first subnet of the network (in
	// creation order) that has one free; non-nil but empty: no address.
	FixedIPs    []FixedIPRequest
	MAC         string // "" = random fa:16:3e:xx:xx:xx
	DeviceID    string
	DeviceOwner string
	// ComputeBound: the Compute API creates the port as one of DeviceID's
	// NICs (see Port.ComputeBound).
	ComputeBound bool
	HostID       string // binding:host_id; a port with a host is ACTIVE
	// BindingProfile is binding:profile (JSON object; "" = none).
	BindingProfile string
	Name           string
	Description    string
	// PortSecurity nil: the network's port_security_enabled.
	PortSecurity *bool
	// AdminStateUp nil: true.
	AdminStateUp *bool
	// Admin may request addresses outside the pools (but inside the
	// subnet).
	Admin bool
	// SecurityGroups nil: the project's default group when the port has
	// port security; non-nil: exactly these groups of the port's project
	// (none allowed without port security).
	SecurityGroups *[]string
	// AllowedAddressPairs: see AddressPair (a MAC left empty is the
	// port's).
	AllowedAddressPairs []AddressPair
	// Quota, when set, runs first in the port's transaction (the
	// project's port quota).
	Quota Guard
}

// errMACTaken is a random MAC's collision: retried with another one.
var errMACTaken = errors.New("random MAC taken")

// AllocatePort creates a port with its MAC and fixed IPs in one
// transaction. Errors (all network error classes): ErrNetworkNotFound,
// ErrSubnetNotFound, ErrInvalidInput (bad MAC, subnet of another network,
// address not usable), ErrInvalidIPForSubnet / ErrInvalidIPForNetwork
// (address outside the subnet / every subnet, or outside the pools for a
// non-admin), ErrIPAddressInUse, ErrMACAddressInUse,
// ErrIPGenerationFailure (no free address left).
func (s *Store) AllocatePort(ctx context.Context, req PortRequest) (*Port, error) {
	mac := req.MAC
	if mac != "" {
		var err error
		if mac, err = NormalizeMAC(mac); err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		m := mac
		if m == "" {
			m = RandomMAC()
		}
		p, err := s.allocatePort(ctx, req, m)
		if errors.Is(err, errMACTaken) {
			if mac == "" && attempt < maxInsertAttempts {
				continue
			}
			return nil, netErr(ErrMACAddressInUse, "Unable to complete operation for network %s. The mac address %s is in use.", req.NetworkID, m)
		}
		return p, err
	}
}

func (s *Store) allocatePort(ctx context.Context, req PortRequest, mac string) (*Port, error) {
	p := &Port{ID: req.ID, NetworkID: req.NetworkID, ProjectID: req.ProjectID, Name: req.Name,
		Description: req.Description, MACAddress: mac, DeviceID: req.DeviceID, DeviceOwner: req.DeviceOwner,
		ComputeBound: req.ComputeBound && req.DeviceID != "", BindingHostID: req.HostID, BindingProfile: req.BindingProfile, AdminStateUp: req.AdminStateUp == nil || *req.AdminStateUp, RevisionNumber: 1}
	if p.ID == "" {
		p.ID = uuid.NewString()
	}
	p.Status = portStatus(p)
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := runGuards(tx, []Guard{req.Quota}); err != nil {
			return err
		}
		net, err := getNetwork(tx, req.NetworkID)
		if err != nil {
			return err
		}
		p.PortSecurityEnabled = net.PortSecurityEnabled
		if req.PortSecurity != nil {
			p.PortSecurityEnabled = *req.PortSecurity
		}
		if err := setAddressPairs(p, req.AllowedAddressPairs); err != nil {
			return err
		}
		subnets, wants, err := resolveFixedIPs(tx, net.ID, req.FixedIPs, req.Admin)
		if err != nil {
			return err
		}
		var groups []string
		switch {
		case p.PortSecurityEnabled:
			if groups, err = resolvePortGroups(tx, p.ProjectID, req.SecurityGroups); err != nil {
				return err
			}
		case req.SecurityGroups != nil && len(*req.SecurityGroups) > 0:
			return netErr(ErrPortSecurityRequired, "Port security must be enabled and port must have an IP address in order to use security groups.")
		}
		if err := tx.Omit(clause.Associations).Create(p).Error; err != nil {
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				return errMACTaken
			}
			if errors.Is(err, gorm.ErrForeignKeyViolated) {
				return netErr(ErrNetworkNotFound, "Network %s could not be found.", req.NetworkID)
			}
			return fmt.Errorf("create port: %w", err)
		}
		if err := setPortGroups(tx, p.ID, groups); err != nil {
			return err
		}
		if req.FixedIPs == nil {
			return allocateAny(tx, p, subnets)
		}
		for _, w := range wants {
			if err := allocateOne(tx, p, w); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.GetPort(ctx, p.ID)
}

func portStatus(p *Port) string {
	if p.BindingHostID != "" && p.AdminStateUp {
		return PortActive
	}
	return PortDown
}

// wantIP is a resolved fixed-IP request: a subnet and maybe an address.
type wantIP struct {
	subnet *Subnet
	ip     netip.Addr // invalid: any free address
}

// resolveFixedIPs checks requests against the network's subnets.
func resolveFixedIPs(tx *gorm.DB, networkID string, reqs []FixedIPRequest, admin bool) ([]Subnet, []wantIP, error) {
	var subnets []Subnet
	if err := tx.Where("network_id = ?", networkID).Order("created_at, id").Find(&subnets).Error; err != nil {
		return nil, nil, fmt.Errorf("port: subnets of %s: %w", networkID, err)
	}
	var wants []wantIP
	seen := map[netip.Addr]bool{}
	for _, r := range reqs {
		var w wantIP
		if r.IP != "" {
			a, err := ParseIPv4(r.IP)
			if err != nil {
				return nil, nil, InvalidInput("%v", err)
			}
			w.ip = a
			if seen[a] {
				return nil, nil, InvalidInput("IP address %s is requested more than once", a)
			}
			seen[a] = true
		}
		if r.SubnetID != "" {
			for i := range subnets {
				if subnets[i].ID == r.SubnetID {
					w.subnet = &subnets[i]
				}
			}
			if w.subnet == nil {
				if _, err := getSubnet(tx, r.SubnetID); err != nil {
					return nil, nil, err
				}
				return nil, nil, InvalidInput("subnet %s is not on network %s", r.SubnetID, networkID)
			}
			if w.ip.IsValid() && !w.subnet.Prefix().Contains(w.ip) {
				return nil, nil, netErr(ErrInvalidIPForSubnet, "IP address %s is not a valid IP for the specified subnet.", w.ip)
			}
		} else if w.ip.IsValid() {
			for i := range subnets {
				if subnets[i].Prefix().Contains(w.ip) {
					w.subnet = &subnets[i]
					break
				}
			}
			if w.subnet == nil {
				return nil, nil, netErr(ErrInvalidIPForNetwork, "IP address %s is not a valid IP for any of the subnets on the specified network.", w.ip)
			}
		} else {
			return nil, nil, InvalidInput("a fixed IP needs a subnet_id or an ip_address")
		}
		if w.ip.IsValid() {
			first, last := hostRange(w.subnet.Prefix())
			if u := ip4(w.ip); u < first || u > last {
				return nil, nil, netErr(ErrInvalidIPForSubnet, "IP address %s is not a valid IP for the specified subnet.", w.ip)
			}
			if !admin && !w.subnet.InPools(w.ip) {
				return nil, nil, netErr(ErrInvalidIPForSubnet, "IP address %s is not a valid IP for the specified subnet: it is outside the allocation pools.", w.ip)
			}
		}
		wants = append(wants, w)
	}
	return subnets, wants, nil
}

// allocateAny gives p one address from the first subnet with room.
func allocateAny(tx *gorm.DB, p *Port, subnets []Subnet) error {
	if len(subnets) == 0 {
		return nil
	}
	for i := range subnets {
		err := allocateOne(tx, p, wantIP{subnet: &subnets[i]})
		if errors.Is(err, ErrIPGenerationFailure) {
			continue
		}
		return err
	}
	return netErr(ErrIPGenerationFailure, "No more IP addresses available on network %s.", p.NetworkID)
}

// allocateOne inserts one allocation: the requested address (taken:
// ErrIPAddressInUse), or a free pool address picked at random so that
// concurrent allocations rarely collide; a collision is retried.
func allocateOne(tx *gorm.DB, p *Port, w wantIP) error {
	if w.ip.IsValid() {
		a := IPAllocation{SubnetID: w.subnet.ID, IPAddress: w.ip.String(), PortID: p.ID, NetworkID: p.NetworkID}
		err := tx.Omit(clause.Associations).Create(&a).Error
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			return netErr(ErrIPAddressInUse, "Unable to complete operation for network %s. The IP address %s is in use.", p.NetworkID, w.ip)
		}
		if errors.Is(err, gorm.ErrForeignKeyViolated) {
			return netErr(ErrSubnetNotFound, "Subnet %s could not be found.", w.subnet.ID)
		}
		if err != nil {
			return fmt.Errorf("allocate %s: %w", w.ip, err)
		}
		return nil
	}
	for attempt := 0; attempt < maxInsertAttempts; attempt++ {
		cands, err := freeCandidates(tx, w.subnet, 1024)
		if err != nil {
			return err
		}
		if len(cands) == 0 {
			return netErr(ErrIPGenerationFailure, "No more IP addresses available for subnet %s.", w.subnet.ID)
		}
		ip := cands[randIntn(len(cands))]
		a := IPAllocation{SubnetID: w.subnet.ID, IPAddress: ip.String(), PortID: p.ID, NetworkID: p.NetworkID}
		// A savepoint: on PostgreSQL a failed INSERT aborts the whole
		// transaction unless rolled back to one.
		err = tx.Transaction(func(sp *gorm.DB) error { return sp.Omit(clause.Associations).Create(&a).Error })
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			continue
		}
		if errors.Is(err, gorm.ErrForeignKeyViolated) {
			return netErr(ErrSubnetNotFound, "Subnet %s could not be found.", w.subnet.ID)
		}
		if err != nil {
			return fmt.Errorf("allocate from %s: %w", w.subnet.ID, err)
		}
		return nil
	}
	return netErr(ErrIPGenerationFailure, "Could not allocate an IP address on subnet %s after %d attempts.", w.subnet.ID, maxInsertAttempts)
}

// freeCandidates returns up to window free pool addresses of sn, in pool
// order.
func freeCandidates(tx *gorm.DB, sn *Subnet, window int) ([]netip.Addr, error) {
	var taken []string
	if err := tx.Model(&IPAllocation{}).Where("subnet_id = ?", sn.ID).Pluck("ip_address", &taken).Error; err != nil {
		return nil, fmt.Errorf("allocated addresses of %s: %w", sn.ID, err)
	}
	used := make(map[uint32]bool, len(taken))
	for _, t := range taken {
		if a, err := netip.ParseAddr(t); err == nil && a.Is4() {
			used[ip4(a)] = true
		}
	}
	var gw uint32
	if sn.GatewayIP != nil {
		if a, err := netip.ParseAddr(*sn.GatewayIP); err == nil && a.Is4() {
			gw = ip4(a)
		}
	}
	var out []netip.Addr
	for _, r := range sn.poolRanges() {
		for u := r.lo; ; u++ {
			if !used[u] && u != gw {
				out = append(out, addr4(u))
				if len(out) >= window {
					return out, nil
				}
			}
			if u == r.hi {
				break
			}
		}
	}
	return out, nil
}

// GetPort returns one port with its fixed IPs.
func (s *Store) GetPort(ctx context.Context, id string) (*Port, error) {
	return getPort(s.WithContext(ctx), id)
}

func getPort(tx *gorm.DB, id string) (*Port, error) {
	var p Port
	err := tx.Preload("FixedIPs", orderAllocations).Where("id = ?", id).First(&p).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, netErr(ErrPortNotFound, "Port %s could not be found.", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get port %s: %w", id, err)
	}
	if err := loadPortGroups(tx, []*Port{&p}); err != nil {
		return nil, err
	}
	return &p, nil
}

// loadPortGroups fills in the ports' SecurityGroups.
func loadPortGroups(tx *gorm.DB, ports []*Port) error {
	if len(ports) == 0 {
		return nil
	}
	ids := make([]string, 0, len(ports))
	for _, p := range ports {
		ids = append(ids, p.ID)
	}
	var rows []PortSecurityGroup
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		var part []PortSecurityGroup
		if err := tx.Session(&gorm.Session{NewDB: true}).Where("port_id IN ?", chunk).
			Order("port_id, security_group_id").Find(&part).Error; err != nil {
			return fmt.Errorf("security groups of ports: %w", err)
		}
		rows = append(rows, part...)
	}
	by := map[string][]string{}
	for _, r := range rows {
		by[r.PortID] = append(by[r.PortID], r.SecurityGroupID)
	}
	for _, p := range ports {
		p.SecurityGroups = nonNil(by[p.ID])
	}
	return nil
}

func portPtrs(ps []Port) []*Port {
	out := make([]*Port, len(ps))
	for i := range ps {
		out[i] = &ps[i]
	}
	return out
}

func orderAllocations(db *gorm.DB) *gorm.DB { return db.Order("subnet_id, ip_address") }

// PortFilter narrows ListPorts; empty fields match everything.
type PortFilter struct {
	NetworkID string
	DeviceID  string
	ProjectID string
}

// ListPorts returns ports with their fixed IPs, oldest first.
func (s *Store) ListPorts(ctx context.Context, f PortFilter) ([]Port, error) {
	q := s.WithContext(ctx).Preload("FixedIPs", orderAllocations).Order("created_at, id")
	if f.NetworkID != "" {
		q = q.Where("network_id = ?", f.NetworkID)
	}
	if f.DeviceID != "" {
		q = q.Where("device_id = ?", f.DeviceID)
	}
	if f.ProjectID != "" {
		q = q.Where("project_id = ?", f.ProjectID)
	}
	var out []Port
	if err := q.Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list ports: %w", err)
	}
	if err := loadPortGroups(s.WithContext(ctx), portPtrs(out)); err != nil {
		return nil, err
	}
	return out, nil
}

// PortColumns are the ports' columns a PortPage may filter on, by the
// Networking API's attribute name (tenant_id is project_id).
var PortColumns = map[string]string{"id": "id", "name": "name", "description": "description",
	"network_id": "network_id", "project_id": "project_id", "tenant_id": "project_id", "device_id": "device_id",
	"device_owner": "device_owner", "mac_address": "mac_address", "status": "status",
	"binding:host_id": "binding_host_id"}

// PortPage asks for one page of the ports list, in ListPorts' order
// (created_at, id).
type PortPage struct {
	// Match: each attribute (a PortColumns key) must equal one of its
	// values.
	Match map[string][]string
	// VisibleTo limits the list to the ports of this project and those on
	// its networks; "" lists every port (admins).
	VisibleTo string
	// Marker is the id of the port the page starts after; it must itself
	// be listed under the same filters.
	Marker string
	// Limit is the page size; 0 lists every port.
	Limit int
}

// ListPortsPage returns a page of ports with their fixed IPs and security
// groups and whether more follow. It reads limit + 1 rows from the
// marker's own row (a keyset on created_at, id) and loads the page's fixed
// IPs and groups in one query each. markerFound is false when Marker names
// no port the same query lists.
func (s *Store) ListPortsPage(ctx context.Context, pg PortPage) (page []Port, more, markerFound bool, err error) {
	db := s.WithContext(ctx)
	where := func() *gorm.DB {
		q := db.Session(&gorm.Session{NewDB: true}).Model(&Port{})
		keys := make([]string, 0, len(pg.Match))
		for k := range pg.Match {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			col, ok := PortColumns[k]
			if !ok {
				continue
			}
			q = q.Where("ports."+col+" IN ?", pg.Match[k])
		}
		if pg.VisibleTo != "" {
			q = q.Where("ports.project_id = ? OR EXISTS (SELECT 1 FROM networks WHERE networks.id = ports.network_id "+
				"AND networks.project_id = ?)", pg.VisibleTo, pg.VisibleTo)
		}
		return q
	}
	for k := range pg.Match {
		if _, ok := PortColumns[k]; !ok {
			return nil, false, false, fmt.Errorf("list ports: %q is no port column", k)
		}
	}
	q := where()
	if pg.Marker != "" {
		var marks []Port
		if err := where().Select("id, created_at").Where("ports.id = ?", pg.Marker).Limit(1).Find(&marks).Error; err != nil {
			return nil, false, false, fmt.Errorf("list ports: marker %s: %w", pg.Marker, err)
		}
		if len(marks) == 0 {
			return nil, false, false, nil
		}
		m := marks[0]
		q = q.Where("ports.created_at > ? OR (ports.created_at = ? AND ports.id > ?)", m.CreatedAt, m.CreatedAt, m.ID)
	}
	q = q.Order("ports.created_at, ports.id").Preload("FixedIPs", orderAllocations)
	if pg.Limit > 0 {
		q = q.Limit(pg.Limit + 1)
	}
	if err := q.Find(&page).Error; err != nil {
		return nil, false, false, fmt.Errorf("list ports: %w", err)
	}
	if pg.Limit > 0 && len(page) > pg.Limit {
		page, more = page[:pg.Limit], true
	}
	if err := loadPortGroups(db, portPtrs(page)); err != nil {
		return nil, false, false, err
	}
	return page, more, true, nil
}

// ServerPorts returns the NICs of server instanceID of project, in port
// creation order: the ports of that project the Compute API bound to it.
// A port merely labelled with the server's id (device_id set through the
// Networking API, by its project or any other) is not one: a server's
// NICs, and so what the agent plugs and which gateway becomes its default
// route, come only from the Compute API.
func (s *Store) ServerPorts(ctx context.Context, instanceID, project string) ([]Port, error) {
	if instanceID == "" {
		return nil, nil
	}
	var out []Port
	err := s.WithContext(ctx).Preload("FixedIPs", orderAllocations).Order("created_at, id").
		Where("device_id = ? AND project_id = ? AND compute_bound = ?", instanceID, project, true).Find(&out).Error
	if err != nil {
		return nil, fmt.Errorf("ports of server %s: %w", instanceID, err)
	}
	if err := loadPortGroups(s.WithContext(ctx), portPtrs(out)); err != nil {
		return nil, err
	}
	return out, nil
}

// ServerPortsView is what a server view shows of servers' ports
// (PortsOfServers): the ports with their fixed IPs and security groups,
// and the names of their networks and groups by id (one gone is left
// out).
type ServerPortsView struct {
	Ports        []Port
	NetworkNames map[string]string
	GroupNames   map[string]string
}

// PortsOfServers returns the ports the Compute API bound to any of the
// servers ids, in ServerPorts' order, with what a server view shows of
// them: id, device, project, network, MAC, fixed IPs (ordered as
// ServerPorts orders them) and security groups (sorted), and the names
// of their networks and groups. A server's NICs are those of its own
// project: the caller keeps those. One query per 1,000 servers: a client
// polling a server pays it at every GET.
func (s *Store) PortsOfServers(ctx context.Context, ids []string) (ServerPortsView, error) {
	out := ServerPortsView{NetworkNames: map[string]string{}, GroupNames: map[string]string{}}
	for chunk := range slices.Chunk(ids, 1000) {
		var rows []struct {
			ID, DeviceID, ProjectID, NetworkID, MACAddress       string
			SubnetID, IPAddress, NetworkName, GroupID, GroupName *string
		}
		err := s.WithContext(ctx).Table("ports").
			Select("ports.id, ports.device_id, ports.project_id, ports.network_id, ports.mac_address, "+
				"ip_allocations.subnet_id, ip_allocations.ip_address, networks.name AS network_name, "+
				"port_security_groups.security_group_id AS group_id, security_groups.name AS group_name").
			Joins("LEFT JOIN ip_allocations ON ip_allocations.port_id = ports.id").
			Joins("LEFT JOIN networks ON networks.id = ports.network_id").
			Joins("LEFT JOIN port_security_groups ON port_security_groups.port_id = ports.id").
			Joins("LEFT JOIN security_groups ON security_groups.id = port_security_groups.security_group_id").
			Where("ports.device_id IN ? AND ports.compute_bound = ?", chunk, true).
			Order("ports.created_at, ports.id, ip_allocations.subnet_id, ip_allocations.ip_address, port_security_groups.security_group_id").
			Scan(&rows).Error
		if err != nil {
			return ServerPortsView{}, fmt.Errorf("ports of %d servers: %w", len(chunk), err)
		}
		// A row per port, fixed IP and group: the IPs come in order
		// (each repeated once per group), the groups once per IP.
		var ips, groups map[string]bool
		for _, r := range rows {
			if r.NetworkName != nil {
				out.NetworkNames[r.NetworkID] = *r.NetworkName
			}
			if r.GroupID != nil && r.GroupName != nil {
				out.GroupNames[*r.GroupID] = *r.GroupName
			}
			if len(out.Ports) == 0 || out.Ports[len(out.Ports)-1].ID != r.ID {
				out.Ports = append(out.Ports, Port{ID: r.ID, DeviceID: r.DeviceID, ProjectID: r.ProjectID, NetworkID: r.NetworkID,
					MACAddress: r.MACAddress, FixedIPs: []IPAllocation{}})
				ips, groups = map[string]bool{}, map[string]bool{}
			}
			p := &out.Ports[len(out.Ports)-1]
			if r.IPAddress != nil && !ips[*r.SubnetID+" "+*r.IPAddress] {
				ips[*r.SubnetID+" "+*r.IPAddress] = true
				p.FixedIPs = append(p.FixedIPs, IPAllocation{SubnetID: *r.SubnetID, IPAddress: *r.IPAddress, PortID: r.ID,
					NetworkID: r.NetworkID})
			}
			if r.GroupID != nil && !groups[*r.GroupID] {
				groups[*r.GroupID] = true
				p.SecurityGroups = append(p.SecurityGroups, *r.GroupID)
			}
		}
	}
	for i := range out.Ports {
		slices.Sort(out.Ports[i].SecurityGroups)
	}
	return out, nil
}

// InstanceProject returns the project of live instance id; ok is false
// when there is none.
func (s *Store) InstanceProject(ctx context.Context, id string) (project string, ok bool, err error) {
	var projects []string
	if err := s.WithContext(ctx).Model(&Instance{}).Where("id = ? AND deleted_at IS NULL", id).Limit(1).
		Pluck("project_id", &projects).Error; err != nil {
		return "", false, fmt.Errorf("project of instance %s: %w", id, err)
	}
	if len(projects) == 0 {
		return "", false, nil
	}
	return projects[0], true, nil
}

// PortUpdate changes a port; nil fields are left alone.
type PortUpdate struct {
	Name, Description     *string
	AdminStateUp          *bool
	DeviceID, DeviceOwner *string
	HostID                *string
	BindingProfile        *string // JSON object; "" = none
	PortSecurity          *bool
	MAC                   *string
	// ComputeBound sets Port.ComputeBound (the Compute API's bind path);
	// nil leaves it, unless DeviceID changes: a port whose device changes
	// outside the Compute API is no server's NIC.
	ComputeBound *bool
	// FixedIPs replaces the port's addresses: entries naming an address
	// the port already has keep it, the rest are allocated as in
	// AllocatePort and addresses not named are released.
	FixedIPs *[]FixedIPRequest
	// SecurityGroups replaces the port's groups (of its own project;
	// none allowed without port security).
	SecurityGroups *[]string
	Admin          bool
	// AllowedAddressPairs replaces the port's pairs.
	AllowedAddressPairs *[]AddressPair
	// IfRevision refuses the update (ErrRevisionConstraint) unless the
	// port is at that revision (Neutron's If-Match).
	IfRevision *int
}

// UpdatePort applies u in one transaction and bumps the revision. Errors
// as AllocatePort's, plus ErrPortNotFound.
func (s *Store) UpdatePort(ctx context.Context, id string, u PortUpdate) (*Port, error) {
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		p, err := getPort(tx.Clauses(clause.Locking{Strength: "UPDATE"}), id)
		if err != nil {
			return err
		}
		if err := CheckRevision(u.IfRevision, p.RevisionNumber); err != nil {
			return err
		}
		set := func(dst *string, v *string) {
			if v != nil {
				*dst = *v
			}
		}
		set(&p.Name, u.Name)
		set(&p.Description, u.Description)
		if u.DeviceID != nil && *u.DeviceID != p.DeviceID {
			p.ComputeBound = false
		}
		if u.ComputeBound != nil {
			p.ComputeBound = *u.ComputeBound
		}
		set(&p.DeviceID, u.DeviceID)
		set(&p.DeviceOwner, u.DeviceOwner)
		if p.DeviceID == "" {
			p.ComputeBound = false
		}
		set(&p.BindingHostID, u.HostID)
		set(&p.BindingProfile, u.BindingProfile)
		if u.AdminStateUp != nil {
			p.AdminStateUp = *u.AdminStateUp
		}
		if u.PortSecurity != nil {
			p.PortSecurityEnabled = *u.PortSecurity
		}
		if err := updatePortGroups(tx, p, u.SecurityGroups); err != nil {
			return err
		}
		if u.MAC != nil {
			m, err := NormalizeMAC(*u.MAC)
			if err != nil {
				return err
			}
			p.MACAddress = m
		}
		switch {
		case u.AllowedAddressPairs != nil:
			if err := setAddressPairs(p, *u.AllowedAddressPairs); err != nil {
				return err
			}
		case !p.PortSecurityEnabled && p.AllowedAddressPairs != "":
			return netErr(ErrAddressPairsNeedSecurity, "Port Security must be enabled in order to have allowed address pairs on a port.")
		}
		p.Status = portStatus(p)
		p.RevisionNumber++
		if err := tx.Omit(clause.Associations).Save(p).Error; err != nil {
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				return netErr(ErrMACAddressInUse, "Unable to complete operation for network %s. The mac address %s is in use.", p.NetworkID, p.MACAddress)
			}
			return fmt.Errorf("update port %s: %w", id, err)
		}
		if u.FixedIPs == nil {
			return nil
		}
		keep := map[string]bool{}
		var fresh []FixedIPRequest
		for _, r := range *u.FixedIPs {
			held := false
			for _, a := range p.FixedIPs {
				if r.IP != "" && a.IPAddress == r.IP && (r.SubnetID == "" || r.SubnetID == a.SubnetID) {
					keep[a.SubnetID+"|"+a.IPAddress] = true
					held = true
				}
			}
			if !held {
				fresh = append(fresh, r)
			}
		}
		for _, a := range p.FixedIPs {
			if !keep[a.SubnetID+"|"+a.IPAddress] {
				if err := tx.Where("subnet_id = ? AND ip_address = ?", a.SubnetID, a.IPAddress).Delete(&IPAllocation{}).Error; err != nil {
					return fmt.Errorf("update port %s: release %s: %w", id, a.IPAddress, err)
				}
			}
		}
		_, wants, err := resolveFixedIPs(tx, p.NetworkID, fresh, u.Admin)
		if err != nil {
			return err
		}
		for _, w := range wants {
			if err := allocateOne(tx, p, w); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.GetPort(ctx, id)
}

// BindPort sets a port's device and host (empty strings unbind it): what
// the Compute API does when a server takes a pre-created port, and when
// it lets go of one it did not create. It is the Compute API's bind path:
// a port bound here is one of the server's NICs (Port.ComputeBound).
func (s *Store) BindPort(ctx context.Context, portID, deviceID, owner, host string) (*Port, error) {
	bound := deviceID != ""
	return s.UpdatePort(ctx, portID, PortUpdate{DeviceID: &deviceID, DeviceOwner: &owner, HostID: &host, ComputeBound: &bound})
}

// SetPortStatus records the data plane's view of a port (ACTIVE once
// plumbed, DOWN otherwise) without bumping the revision.
func (s *Store) SetPortStatus(ctx context.Context, portID, status string) error {
	res := s.WithContext(ctx).Model(&Port{}).Where("id = ?", portID).Update("status", status)
	if res.Error != nil {
		return fmt.Errorf("set status of port %s: %w", portID, res.Error)
	}
	if res.RowsAffected == 0 {
		return netErr(ErrPortNotFound, "Port %s could not be found.", portID)
	}
	return nil
}

// ReleasePort deletes a port and frees its addresses.
func (s *Store) ReleasePort(ctx context.Context, portID string) error {
	return s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Explicitly, not only by ON DELETE CASCADE: a SQLite connection
		// opened without the foreign_keys pragma would not cascade.
		if err := tx.Where("port_id = ?", portID).Delete(&IPAllocation{}).Error; err != nil {
			return fmt.Errorf("release port %s: addresses: %w", portID, err)
		}
		if err := tx.Where("port_id = ?", portID).Delete(&PortSecurityGroup{}).Error; err != nil {
			return fmt.Errorf("release port %s: security groups: %w", portID, err)
		}
		res := tx.Where("id = ?", portID).Delete(&Port{})
		if res.Error != nil {
			return fmt.Errorf("release port %s: %w", portID, res.Error)
		}
		if res.RowsAffected == 0 {
			return netErr(ErrPortNotFound, "Port %s could not be found.", portID)
		}
		return nil
	})
}
