package store

import (
	"encoding/json"
	"net/netip"

	"github.com/capsule-cloud/capsule/errdefs"
)

// AddressPair is one of a port's allowed address pairs (Neutron's
// allowed-address-pairs extension): besides its fixed IPs and MAC, the
// port may send from this address or prefix with this MAC (a VIP moved
// between servers by keepalived, say). The anti-spoofing flows allow it.
type AddressPair struct {
	IPAddress  string `json:"ip_address"`  // an address or a CIDR prefix
	MACAddress string `json:"mac_address"` // the port's MAC when not given
}

// MaxAddressPairs is Neutron's max_allowed_address_pair default.
const MaxAddressPairs = 10

// Address-pair errors, with Neutron's types.
var (
	ErrAddressPairsExhausted    = errdefs.Class{Kind: errdefs.ErrInvalidArgument, Reason: "AllowedAddressPairExhausted"}
	ErrDuplicateAddressPair     = errdefs.Class{Kind: errdefs.ErrInvalidArgument, Reason: "DuplicateAddressPairInRequest"}
	ErrAddressPairsNeedSecurity = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "AddressPairAndPortSecurityRequired"}
)

// AddressPairs decodes the port's allowed address pairs (never nil).
func (p *Port) AddressPairs() []AddressPair {
	out := []AddressPair{}
	if p.AllowedAddressPairs != "" {
		_ = json.Unmarshal([]byte(p.AllowedAddressPairs), &out)
	}
	return out
}

// setAddressPairs checks pairs and stores them on p: each ip_address an
// address or a prefix (stored in canonical form, a prefix masked), each
// MAC a unicast one (p's own when empty), no pair twice, at most
// MaxAddressPairs, and only on a port with port security (without it the
// port may send from anything anyway).
func setAddressPairs(p *Port, pairs []AddressPair) error {
	if len(pairs) == 0 {
		p.AllowedAddressPairs = ""
		return nil
	}
	if !p.PortSecurityEnabled {
		return netErr(ErrAddressPairsNeedSecurity, "Port Security must be enabled in order to have allowed address pairs on a port.")
	}
	if len(pairs) > MaxAddressPairs {
		return netErr(ErrAddressPairsExhausted, "The number of allowed address pair exceeds the maximum %d.", MaxAddressPairs)
	}
	out := make([]AddressPair, 0, len(pairs))
	for _, ap := range pairs {
		ip, err := canonicalPairIP(ap.IPAddress)
		if err != nil {
			return err
		}
		mac := p.MACAddress
		if ap.MACAddress != "" {
			if mac, err = NormalizeMAC(ap.MACAddress); err != nil {
				return err
			}
		}
		c := AddressPair{IPAddress: ip, MACAddress: mac}
		for _, o := range out {
			if o == c {
				return netErr(ErrDuplicateAddressPair, "Request contains duplicate address pair: mac_address %s ip_address %s.", mac, ip)
			}
		}
		out = append(out, c)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	p.AllowedAddressPairs = string(b)
	return nil
}

// canonicalPairIP is an address (10.0.0.5) or a masked prefix
// (10.0.0.0/24; a /32 or /128 is the bare address).
func canonicalPairIP(s string) (string, error) {
	if s == "" {
		return "", InvalidInput("Allowed address pair must contain an ip_address")
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap().String(), nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return "", InvalidInput("'%s' is not a valid IP address or CIDR", s)
	}
	pfx = pfx.Masked()
	if pfx.IsSingleIP() {
		return pfx.Addr().String(), nil
	}
	return pfx.String(), nil
}
