// Package metadata renders what a server learns about itself from the
// cloud — Nova's metadata tree, in its OpenStack layout
// (/openstack/<version>/meta_data.json, user_data, network_data.json,
// vendor_data.json, vendor_data2.json, password) and its EC2 layout
// (/<version>/meta-data/..., /<version>/user-data) — from a
// protocol.InstanceMetadata. The metadata service (package metaproxy)
// serves the tree over HTTP; the config drive is its openstack/ part
// written into the server. Rendering is pure: no I/O, no clock.
package metadata

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/capsule-cloud/capsule/protocol"
)

// OpenStackVersions are the dated versions of the OpenStack layout Nova
// lists at /openstack/ (its base.OPENSTACK_VERSIONS), oldest first; each
// serves the same documents here, the newer keys included (clients ignore
// keys they do not know).
var OpenStackVersions = []string{
	"2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
	"2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14",
}

// EC2Versions are the EC2 API versions Nova lists at / (its
// VERSIONS), oldest first.
var EC2Versions = []string{
	"1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10",
	"2007-12-15", "2008-02-01", "2008-09-01", "2009-04-04",
}

// ConfigDriveDir is where a server's config drive is written: the
// directory cloud-init's ConfigDrive datasource reads besides a config-2
// block device (its seed_dir), so images with cloud-init find it.
const ConfigDriveDir = "/var/lib/cloud/seed/config_drive"

// Tree is a rendered metadata tree: file path (no leading slash, e.g.
// "openstack/latest/meta_data.json") to content. Directories are implied
// by the paths.
type Tree map[string][]byte

// Render builds the whole tree of m.
func Render(m protocol.InstanceMetadata) (Tree, error) {
	t := Tree{}
	userData, err := decodeUserData(m.UserData)
	if err != nil {
		return nil, err
	}
	meta, err := json.Marshal(metaData(m))
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: meta_data.json: %w", m.UUID, err)
	}
	network, err := json.Marshal(NetworkData(m.NICs))
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: network_data.json: %w", m.UUID, err)
	}
	for _, v := range append(append([]string{}, OpenStackVersions...), "latest") {
		dir := "openstack/" + v + "/"
		t[dir+"meta_data.json"] = meta
		t[dir+"vendor_data.json"] = []byte("{}")
		t[dir+"vendor_data2.json"] = []byte("{}")
		t[dir+"network_data.json"] = network
		// The password the server posted (empty before it posts), from
		// 2013-04-04 (Grizzly) on, as Nova lists it.
		if v != OpenStackVersions[0] {
			t[dir+"password"] = []byte(m.Password)
		}
		if userData != nil {
			t[dir+"user_data"] = userData
		}
	}
	for _, v := range append(append([]string{}, EC2Versions...), "latest") {
		for k, val := range ec2MetaData(m) {
			t[v+"/meta-data/"+k] = []byte(val)
		}
		if userData != nil {
			t[v+"/user-data"] = userData
		}
	}
	return t, nil
}

// decodeUserData decodes the stored base64 user data (the API validated
// it); nil means none.
func decodeUserData(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("metadata: user data is not base64: %w", err)
	}
	return b, nil
}

type key struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Data string `json:"data"`
}

// metaData is Nova's meta_data.json.
func metaData(m protocol.InstanceMetadata) map[string]any {
	meta := m.Meta
	if meta == nil {
		meta = map[string]string{}
	}
	out := map[string]any{
		"uuid": m.UUID, "name": m.Name, "hostname": m.Hostname, "project_id": m.ProjectID,
		"availability_zone": m.AvailabilityZone, "launch_index": m.LaunchIndex, "meta": meta,
		"devices": []any{}, "dedicated_cpus": []int{},
	}
	if k := strings.TrimSpace(m.KeyData); k != "" {
		typ := "ssh"
		if strings.HasPrefix(k, "-----BEGIN") {
			typ = "x509"
		}
		out["public_keys"] = map[string]string{m.KeyName: k}
		out["keys"] = []key{{Name: m.KeyName, Type: typ, Data: k}}
	}
	return out
}

// EC2InstanceID is the server's EC2-style id (Nova's i-%08x of an
// integer id; Capsule derives the 8 hex digits from the UUID).
func EC2InstanceID(uuid string) string {
	h := strings.ReplaceAll(uuid, "-", "")
	if len(h) > 8 {
		h = h[:8]
	}
	return "i-" + h
}

// ec2MetaData is the files of the EC2 layout's meta-data/ directory.
func ec2MetaData(m protocol.InstanceMetadata) map[string]string {
	local := ""
	for _, n := range m.NICs {
		for _, ip := range n.IPs {
			if p := net.ParseIP(ip.Address); p != nil && p.To4() != nil && local == "" {
				local = ip.Address
			}
		}
	}
	groups := m.SecurityGroups
	if len(groups) == 0 {
		groups = []string{"default"}
	}
	out := map[string]string{
		"ami-id": m.ImageID, "ami-launch-index": fmt.Sprint(m.LaunchIndex), "ami-manifest-path": "FIXME", // Nova's value
		"hostname": m.Hostname, "local-hostname": m.Hostname, "public-hostname": m.Hostname,
		"instance-action": "none", "instance-id": EC2InstanceID(m.UUID), "instance-type": m.FlavorName,
		"local-ipv4": local, "public-ipv4": "", "reservation-id": m.ReservationID,
		"security-groups":             strings.Join(groups, "\n"),
		"placement/availability-zone": m.AvailabilityZone,
		"block-device-mapping/ami":    "/dev/root",
		"block-device-mapping/root":   "/dev/root",
	}
	if k := strings.TrimSpace(m.KeyData); k != "" && !strings.HasPrefix(k, "-----BEGIN") {
		out["public-keys/0/openssh-key"] = k
		// public-keys/ itself lists "0=<name>" (see List).
	}
	return out
}

// NetworkData is Nova's network_data.json for static addresses: one link
// per NIC (its MAC and MTU), one network per fixed address (ipv4/ipv6,
// with its netmask, the default route through the first gateway and the
// subnet's DNS servers) and the DNS servers as services.
func NetworkData(nics []protocol.NIC) map[string]any {
	links := []map[string]any{}
	networks := []map[string]any{}
	services := []map[string]any{}
	seenDNS := map[string]bool{}
	defaultRouted := false
	for _, n := range nics {
		id := "tap" + n.PortID
		if len(id) > 14 {
			id = id[:14]
		}
		link := map[string]any{"id": id, "vif_id": n.PortID, "type": "ovs", "ethernet_mac_address": n.MAC}
		if n.MTU > 0 {
			link["mtu"] = n.MTU
		} else {
			link["mtu"] = nil
		}
		links = append(links, link)
		var nicDNS []map[string]any
		for _, d := range n.DNS {
			s := map[string]any{"type": "dns", "address": d}
			nicDNS = append(nicDNS, s)
			if !seenDNS[d] {
				seenDNS[d] = true
				services = append(services, s)
			}
		}
		for _, ip := range n.IPs {
			addr := net.ParseIP(ip.Address)
			if addr == nil {
				continue
			}
			typ, bits := "ipv6", 128
			if addr.To4() != nil {
				typ, bits = "ipv4", 32
			}
			netw := map[string]any{
				"id": fmt.Sprintf("network%d", len(networks)), "link": id, "network_id": n.NetworkID,
				"type": typ, "ip_address": ip.Address,
				"netmask": netmask(ip.PrefixLen, bits), "routes": []map[string]any{},
				"services": nicDNS,
			}
			if nicDNS == nil {
				netw["services"] = []map[string]any{}
			}
			gw := net.ParseIP(n.Gateway)
			if gw != nil && (gw.To4() != nil) == (typ == "ipv4") && !defaultRouted {
				defaultRouted = true
				zero, zeroMask := "0.0.0.0", "0.0.0.0"
				if typ == "ipv6" {
					zero, zeroMask = "::", "::"
				}
				netw["routes"] = []map[string]any{{"network": zero, "netmask": zeroMask, "gateway": n.Gateway}}
			}
			networks = append(networks, netw)
		}
	}
	return map[string]any{"links": links, "networks": networks, "services": services}
}

// netmask writes a prefix length as Nova does: dotted quad for IPv4, the
// expanded IPv6 mask for IPv6.
func netmask(prefix, bits int) string {
	m := net.CIDRMask(prefix, bits)
	if m == nil {
		return ""
	}
	return net.IP(m).String()
}

// Lookup answers a GET of path (leading/trailing slashes as a client
// sends them) the way Nova's metadata API does: a file's content, or a
// directory's listing (one entry a line, subdirectories with a trailing
// "/"); found is false for anything else (404).
func (t Tree) Lookup(path string) (body []byte, found bool) {
	p := strings.Trim(path, "/")
	if b, ok := t[p]; ok {
		return b, true
	}
	entries := t.list(p)
	if entries == nil {
		return nil, false
	}
	return []byte(strings.Join(entries, "\n")), true
}

// list is a directory's entries, sorted; nil when p is no directory.
func (t Tree) list(p string) []string {
	switch p {
	case "":
		// The root lists the EC2 versions and the OpenStack tree.
		return append(append(append([]string{}, EC2Versions...), "latest"), "openstack")
	case "openstack":
		return append(append([]string{}, OpenStackVersions...), "latest")
	}
	if strings.HasSuffix(p, "/meta-data/public-keys") {
		if _, ok := t[p+"/0/openssh-key"]; ok {
			return []string{"0=" + t.keyName(p)}
		}
		return nil
	}
	prefix := p + "/"
	seen := map[string]bool{}
	var out []string
	for k := range t {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		name, _, isDir := strings.Cut(rest, "/")
		if isDir {
			name += "/"
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// keyName is the key's name from the meta_data.json next to an EC2
// version's public-keys (the EC2 layout lists "0=<name>").
func (t Tree) keyName(string) string {
	var md struct {
		Keys []key `json:"keys"`
	}
	if err := json.Unmarshal(t["openstack/latest/meta_data.json"], &md); err == nil && len(md.Keys) > 0 {
		return md.Keys[0].Name
	}
	return ""
}

// ConfigDrive is the part of t a config drive holds (Nova's config drive
// has the openstack/ tree and ec2/<version>/meta-data.json; Capsule writes
// the openstack/ tree, which cloud-init's ConfigDrive datasource reads).
func (t Tree) ConfigDrive() Tree {
	out := Tree{}
	for k, v := range t {
		if strings.HasPrefix(k, "openstack/") {
			out[k] = v
		}
	}
	return out
}
