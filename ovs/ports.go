package ovs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// Interface external_ids keys, as Neutron's OVS agent and Nova set them: the
// Neutron port id, the MAC the instance uses, and the instance (VM) id.
const (
	KeyIfaceID     = "iface-id"
	KeyAttachedMAC = "attached-mac"
	KeyVMUUID      = "vm-uuid"
	KeyIfaceStatus = "iface-status"
)

// ExternalIDs are the Interface external_ids AddAccessPort sets (with
// iface-status=active).
type ExternalIDs struct {
	IfaceID     string // Neutron port id
	AttachedMAC string // the instance's MAC on this port
	VMUUID      string // instance id
}

// Port is an OVS port with its (single) interface of the same name.
type Port struct {
	Name     string
	Bridge   string
	Tag      int    // access VLAN; 0 when untagged
	VLANMode string // "" (OVS default), access, trunk, ...
	OFPort   int    // OpenFlow port number; -1 when OVS could not open it
	// Error is the Interface's error column (e.g. the device is missing).
	Error string
	// ExternalIDs are the Interface's external_ids.
	ExternalIDs map[string]string
}

// IfaceID is the port's iface-id (the Neutron port id), if any.
func (p Port) IfaceID() string { return p.ExternalIDs[KeyIfaceID] }

// VMUUID is the port's vm-uuid (the instance id), if any.
func (p Port) VMUUID() string { return p.ExternalIDs[KeyVMUUID] }

// AddAccessPort attaches the existing network device port to bridge as an
// access port on VLAN tag (untagged/flat when tag is 0) with ids, all in one
// OVSDB transaction, so the port never exists without its VLAN, and returns
// once ovs-vswitchd has applied it (flows may name the port then). Calling
// it again for the same bridge fixes the tag, vlan_mode, trunks and those
// external_ids. A port of that name on another bridge is an error: delete it
// first. In process over ovsdb-server's socket (ovsdb_write.go); with
// ovs-vsctl when that is unreachable (--may-exist skips add-port's own
// column arguments for an existing port, which is why the tag is set with a
// separate "set Port" in the same transaction).
func (c *Client) AddAccessPort(ctx context.Context, bridge, port string, tag int, ids ExternalIDs) error {
	return c.addAccessPort(ctx, bridge, port, tag, ids)
}

// ReplaceAccessPort deletes any port of that name (on any bridge), then
// does AddAccessPort. Use it when the device was re-created: OVS keeps a
// stale port for a deleted device and does not reopen a new device of the
// same name. The delete is a transaction of its own on purpose: deleting and
// re-adding a port in one transaction is a no-op for ovs-vswitchd, which
// would keep the stale device open.
func (c *Client) ReplaceAccessPort(ctx context.Context, bridge, port string, tag int, ids ExternalIDs) error {
	if err := c.DeletePort(ctx, port); err != nil {
		return fmt.Errorf("ovs: replace access port: %w", err)
	}
	return c.AddAccessPort(ctx, bridge, port, tag, ids)
}

func (c *Client) addAccessPort(ctx context.Context, bridge, port string, tag int, ids ExternalIDs) error {
	if bridge == "" || port == "" {
		return fmt.Errorf("ovs: add access port %q to %q: empty name", port, bridge)
	}
	if tag < 0 || tag > 4094 {
		return fmt.Errorf("ovs: add access port %s: VLAN tag %d out of range 0-4094", port, tag)
	}
	if c.dbSocket != "" {
		err := c.addAccessPortDB(ctx, bridge, port, tag, ids)
		if !errors.Is(err, errNoDBSocket) {
			return err
		}
		c.log.Debug("ovsdb socket unreachable, adding the port with ovs-vsctl", "socket", c.dbSocket, "err", err)
	}
	args := []string{"--may-exist", "add-port", bridge, port}
	// vlan_mode=access also for flat ports: an untagged port without it
	// would be a trunk, letting the instance send tagged frames onto any VLAN.
	if tag > 0 {
		args = append(args, "--", "set", "Port", port, "tag="+strconv.Itoa(tag), "vlan_mode=access")
	} else {
		args = append(args, "--", "clear", "Port", port, "tag", "--", "set", "Port", port, "vlan_mode=access")
	}
	args = append(args, "--", "clear", "Port", port, "trunks")
	args = append(args, "--", "set", "Interface", port,
		extID(KeyIfaceID, ids.IfaceID),
		extID(KeyAttachedMAC, ids.AttachedMAC),
		extID(KeyVMUUID, ids.VMUUID),
		extID(KeyIfaceStatus, "active"))
	if _, err := c.Vsctl(ctx, args...); err != nil {
		return fmt.Errorf("ovs: add access port %s to %s (tag %d): %w", port, bridge, tag, err)
	}
	return nil
}

// extID formats one external_ids map entry for ovs-vsctl set, quoting the
// value so MACs (colons) and arbitrary ids parse as one string.
func extID(key, value string) string {
	return "external_ids:" + key + "=" + strconv.Quote(value)
}

// AddTrunkPort attaches the existing device port to bridge as a trunk: it
// carries the given VLANs (all VLANs when none are given) tagged and VLAN 0
// untagged, like a switch uplink. Idempotent.
func (c *Client) AddTrunkPort(ctx context.Context, bridge, port string, vlans ...int) error {
	args := []string{"--may-exist", "add-port", bridge, port,
		"--", "clear", "Port", port, "tag",
		"--", "set", "Port", port, "vlan_mode=trunk"}
	if len(vlans) == 0 {
		args = append(args, "--", "clear", "Port", port, "trunks")
	} else {
		s := make([]string, len(vlans))
		for i, v := range vlans {
			s[i] = strconv.Itoa(v)
		}
		args = append(args, "--", "set", "Port", port, "trunks="+strings.Join(s, ","))
	}
	if _, err := c.Vsctl(ctx, args...); err != nil {
		return fmt.Errorf("ovs: add trunk port %s to %s: %w", port, bridge, err)
	}
	return nil
}

// AddPatchPair joins bridgeA and bridgeB with a pair of patch ports (portA
// on bridgeA, portB on bridgeB) acting as a trunk for all VLANs, in one
// transaction. Idempotent.
func (c *Client) AddPatchPair(ctx context.Context, bridgeA, portA, bridgeB, portB string) error {
	if _, err := c.Vsctl(ctx,
		"--may-exist", "add-port", bridgeA, portA,
		"--", "set", "Interface", portA, "type=patch", "options:peer="+portB,
		"--", "--may-exist", "add-port", bridgeB, portB,
		"--", "set", "Interface", portB, "type=patch", "options:peer="+portA); err != nil {
		return fmt.Errorf("ovs: patch %s:%s <-> %s:%s: %w", bridgeA, portA, bridgeB, portB, err)
	}
	return nil
}

// DeletePort removes port from whichever bridge has it ("ovs-vsctl
// --if-exists del-port", in process when ovsdb-server's socket is
// reachable) and returns once ovs-vswitchd has applied it; a missing port
// is fine.
func (c *Client) DeletePort(ctx context.Context, port string) error {
	if c.dbSocket != "" {
		err := c.deletePortDB(ctx, port)
		if !errors.Is(err, errNoDBSocket) {
			return err
		}
		c.log.Debug("ovsdb socket unreachable, deleting the port with ovs-vsctl", "socket", c.dbSocket, "err", err)
	}
	if _, err := c.Vsctl(ctx, "--if-exists", "del-port", port); err != nil {
		return fmt.Errorf("ovs: delete port %s: %w", port, err)
	}
	return nil
}

// ListPorts returns the ports of bridge, sorted by name.
func (c *Client) ListPorts(ctx context.Context, bridge string) ([]Port, error) {
	all, bridges, err := c.Ports(ctx)
	if err != nil {
		return nil, err
	}
	if !bridges[bridge] {
		return nil, fmt.Errorf("ovs: list ports: no bridge named %s", bridge)
	}
	var out []Port
	for _, p := range all {
		if p.Bridge == bridge {
			out = append(out, p)
		}
	}
	return out, nil
}

// PortByName returns the port named name, on any bridge.
func (c *Client) PortByName(ctx context.Context, name string) (Port, bool, error) {
	return c.findPort(ctx, func(p Port) bool { return p.Name == name })
}

// PortByIfaceID returns the port whose interface carries iface-id ifaceID.
func (c *Client) PortByIfaceID(ctx context.Context, ifaceID string) (Port, bool, error) {
	return c.findPort(ctx, func(p Port) bool { return p.IfaceID() == ifaceID })
}

func (c *Client) findPort(ctx context.Context, match func(Port) bool) (Port, bool, error) {
	all, _, err := c.Ports(ctx)
	if err != nil {
		return Port{}, false, err
	}
	for _, p := range all {
		if match(p) {
			return p, true, nil
		}
	}
	return Port{}, false, nil
}

// Ports returns every port of every bridge (sorted by bridge, then name;
// without each bridge's own internal port, as ovs-vsctl list-ports) and the set of bridge names, read in a single ovs-vsctl transaction so
// the view is consistent.
func (c *Client) Ports(ctx context.Context) ([]Port, map[string]bool, error) {
	if c.dbSocket != "" {
		rows, err := c.selectAll(ctx, []ovsdbOp{
			{Op: "select", Table: "Bridge", Where: []any{}, Columns: []string{"name", "ports"}},
			{Op: "select", Table: "Port", Where: []any{}, Columns: []string{"_uuid", "name", "tag", "vlan_mode", "interfaces"}},
			{Op: "select", Table: "Interface", Where: []any{}, Columns: []string{"_uuid", "name", "ofport", "external_ids", "error"}},
		})
		if err == nil {
			ports, bridges, err := portsOf(rows[0], rows[1], rows[2])
			if err != nil {
				return nil, nil, fmt.Errorf("ovs: list ports: parse ovsdb reply: %w", err)
			}
			return ports, bridges, nil
		}
		if !errors.Is(err, errNoDBSocket) {
			return nil, nil, fmt.Errorf("ovs: list ports: %w", err)
		}
		c.log.Debug("ovsdb socket unreachable, listing ports with ovs-vsctl", "socket", c.dbSocket, "err", err)
	}
	out, err := c.Vsctl(ctx, "--format=json",
		"--", "--columns=name,ports", "list", "Bridge",
		"--", "--columns=_uuid,name,tag,vlan_mode,interfaces", "list", "Port",
		"--", "--columns=_uuid,name,ofport,external_ids,error", "list", "Interface")
	if err != nil {
		return nil, nil, fmt.Errorf("ovs: list ports: %w", err)
	}
	ports, bridges, err := parsePorts(out)
	if err != nil {
		return nil, nil, fmt.Errorf("ovs: list ports: parse ovs-vsctl output: %w", err)
	}
	return ports, bridges, nil
}

// table is one ovs-vsctl --format=json result.
type table struct {
	Headings []string            `json:"headings"`
	Data     [][]json.RawMessage `json:"data"`
}

func (t table) rows() []map[string]json.RawMessage {
	out := make([]map[string]json.RawMessage, 0, len(t.Data))
	for _, d := range t.Data {
		row := make(map[string]json.RawMessage, len(t.Headings))
		for i, h := range t.Headings {
			if i < len(d) {
				row[h] = d[i]
			}
		}
		out = append(out, row)
	}
	return out
}

func parsePorts(out string) ([]Port, map[string]bool, error) {
	dec := json.NewDecoder(strings.NewReader(out))
	var tables []table
	for {
		var t table
		if err := dec.Decode(&t); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, nil, err
		}
		tables = append(tables, t)
	}
	if len(tables) != 3 {
		return nil, nil, fmt.Errorf("want 3 tables, got %d", len(tables))
	}
	return portsOf(tables[0].rows(), tables[1].rows(), tables[2].rows())
}

// portsOf joins rows of the Bridge (name, ports), Port (_uuid, name, tag,
// vlan_mode, interfaces) and Interface (_uuid, name, ofport, external_ids,
// error) tables into ports and the set of bridge names.
func portsOf(bridgeRows, portRows, ifaceRows []map[string]json.RawMessage) ([]Port, map[string]bool, error) {
	type iface struct {
		name, err string
		ofport    int
		ids       map[string]string
	}
	ifaces := map[string]iface{}
	for _, r := range ifaceRows {
		id, err := ovsdbUUID(r["_uuid"])
		if err != nil {
			return nil, nil, err
		}
		var i iface
		if i.name, err = ovsdbString(r["name"]); err != nil {
			return nil, nil, err
		}
		ofport, ok, err := ovsdbOptInt(r["ofport"])
		if err != nil {
			return nil, nil, err
		}
		i.ofport = -1
		if ok {
			i.ofport = ofport
		}
		if i.ids, err = ovsdbMap(r["external_ids"]); err != nil {
			return nil, nil, err
		}
		if errs, err := ovsdbSet(r["error"]); err != nil {
			return nil, nil, err
		} else if len(errs) > 0 {
			if err := json.Unmarshal(errs[0], &i.err); err != nil {
				return nil, nil, err
			}
		}
		ifaces[id] = i
	}
	portBridge := map[string]string{}
	bridges := map[string]bool{}
	for _, r := range bridgeRows {
		name, err := ovsdbString(r["name"])
		if err != nil {
			return nil, nil, err
		}
		bridges[name] = true
		ids, err := ovsdbUUIDSet(r["ports"])
		if err != nil {
			return nil, nil, err
		}
		for _, id := range ids {
			portBridge[id] = name
		}
	}
	var ports []Port
	for _, r := range portRows {
		id, err := ovsdbUUID(r["_uuid"])
		if err != nil {
			return nil, nil, err
		}
		br, ok := portBridge[id]
		if !ok {
			continue // being added or removed by a concurrent transaction
		}
		p := Port{Bridge: br, OFPort: -1}
		if p.Name, err = ovsdbString(r["name"]); err != nil {
			return nil, nil, err
		}
		if p.Name == br {
			continue // the bridge's own internal (LOCAL) port, as list-ports omits it
		}
		if p.Tag, _, err = ovsdbOptInt(r["tag"]); err != nil {
			return nil, nil, err
		}
		if modes, err := ovsdbSet(r["vlan_mode"]); err != nil {
			return nil, nil, err
		} else if len(modes) > 0 {
			if err := json.Unmarshal(modes[0], &p.VLANMode); err != nil {
				return nil, nil, err
			}
		}
		ifIDs, err := ovsdbUUIDSet(r["interfaces"])
		if err != nil {
			return nil, nil, err
		}
		// A Capsule port has one interface of the same name; for bonds
		// prefer that one, else the first.
		for _, ifID := range ifIDs {
			i := ifaces[ifID]
			if p.ExternalIDs == nil || i.name == p.Name {
				p.OFPort, p.Error, p.ExternalIDs = i.ofport, i.err, i.ids
			}
		}
		if p.ExternalIDs == nil {
			p.ExternalIDs = map[string]string{}
		}
		ports = append(ports, p)
	}
	sort.Slice(ports, func(i, j int) bool {
		if ports[i].Bridge != ports[j].Bridge {
			return ports[i].Bridge < ports[j].Bridge
		}
		return ports[i].Name < ports[j].Name
	})
	return ports, bridges, nil
}

// OVSDB JSON values: atoms are bare JSON values, ["uuid", "..."] for uuids;
// sets are ["set", [...]] except that a one-element set may be the bare
// element; maps are ["map", [[k, v], ...]].

func ovsdbString(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("not a string: %s", raw)
	}
	return s, nil
}

func ovsdbUUID(raw json.RawMessage) (string, error) {
	var pair []string
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 || pair[0] != "uuid" {
		return "", fmt.Errorf("not a uuid: %s", raw)
	}
	return pair[1], nil
}

// ovsdbSet returns the elements of a set (or of a bare single atom).
func ovsdbSet(raw json.RawMessage) ([]json.RawMessage, error) {
	var tagged []json.RawMessage
	if err := json.Unmarshal(raw, &tagged); err == nil && len(tagged) == 2 {
		var kind string
		if json.Unmarshal(tagged[0], &kind) == nil && kind == "set" {
			var elems []json.RawMessage
			if err := json.Unmarshal(tagged[1], &elems); err != nil {
				return nil, fmt.Errorf("bad set: %s", raw)
			}
			return elems, nil
		}
	}
	return []json.RawMessage{raw}, nil
}

func ovsdbUUIDSet(raw json.RawMessage) ([]string, error) {
	elems, err := ovsdbSet(raw)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(elems))
	for _, e := range elems {
		id, err := ovsdbUUID(e)
		if err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, nil
}

// ovsdbOptInt reads an optional integer (an integer or an empty set).
func ovsdbOptInt(raw json.RawMessage) (int, bool, error) {
	elems, err := ovsdbSet(raw)
	if err != nil {
		return 0, false, err
	}
	if len(elems) == 0 {
		return 0, false, nil
	}
	var n int
	if err := json.Unmarshal(elems[0], &n); err != nil {
		return 0, false, fmt.Errorf("not an integer: %s", raw)
	}
	return n, true, nil
}

func ovsdbMap(raw json.RawMessage) (map[string]string, error) {
	var tagged []json.RawMessage
	if err := json.Unmarshal(raw, &tagged); err != nil || len(tagged) != 2 {
		return nil, fmt.Errorf("not a map: %s", raw)
	}
	var kind string
	var pairs [][2]string
	if json.Unmarshal(tagged[0], &kind) != nil || kind != "map" || json.Unmarshal(tagged[1], &pairs) != nil {
		return nil, fmt.Errorf("not a string map: %s", raw)
	}
	m := make(map[string]string, len(pairs))
	for _, kv := range pairs {
		m[kv[0]] = kv[1]
	}
	return m, nil
}
