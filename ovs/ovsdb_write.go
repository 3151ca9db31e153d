package ovs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// The two writes every plug and unplug makes (add an access port, delete a
// port) as OVSDB transactions in process, doing what ovs-vsctl does for
// "--may-exist add-port ... -- set Port ..." and "--if-exists del-port":
//
//   - A new port is one transaction: Interface and Port inserted (named
//     uuids) with the tag, vlan_mode and external_ids already set, and a
//     "mutate ... insert" into Bridge.ports, so the port never exists
//     without its VLAN and concurrent adds to one bridge do not lose each
//     other's ports (no read-modify-write of the set). "wait" operations with
//     timeout 0 check what ovs-vsctl checks from its cache (the bridge
//     exists, no port or interface of that name yet) inside the transaction.
//   - An existing port of that name on the same bridge is updated (tag,
//     vlan_mode, trunks, the four external_ids keys), guarded the same way
//     against a concurrent change (where ovs-vsctl's "verify" would make it
//     retry, this retries); one that already is as wanted is left alone and,
//     as ovs-vsctl's unchanged transaction, nothing waits for ovs-vswitchd.
//     On another bridge it is an error.
//   - A delete is a "mutate ... delete" of the port from its bridge's ports;
//     OVSDB garbage-collects the Port and Interface rows (not root).
//   - Each write increments Open_vSwitch.next_cfg in the same transaction
//     (ovs-vsctl's ovsdb_idl_txn_increment: a mutate and a select reading
//     the new value back), then waits, as ovs-vsctl does, until
//     ovs-vswitchd has applied it (cur_cfg >= next_cfg): with a "wait"
//     operation on the same connection, which ovsdb-server holds until no
//     row has cur_cfg < next_cfg, bounded by the client's timeout and ctx.
//     Flows naming the port (in_port=NAME) rely on that: ovs-ofctl
//     resolves the name from ovs-vswitchd, which knows the port only once it
//     has reconfigured.

// withCtx adds ctx's error to err when ctx ended (the socket deadline it
// set is what interrupted the call).
func withCtx(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%w (%w)", err, ctxErr)
	}
	return err
}

// maxTxnTries bounds the retries of a write whose guard (a "wait" with
// timeout 0) failed because a concurrent transaction changed what it read.
const maxTxnTries = 5

// errTryAgain is a failed guard: re-read and retry.
var errTryAgain = errors.New("ovsdb: database changed concurrently")

// ovsdb JSON encodings for building operations.
func ovsSet(elems ...any) []any {
	if elems == nil {
		elems = []any{} // [], not null
	}
	return []any{"set", elems}
}
func ovsUUID(id string) []any              { return []any{"uuid", id} }
func ovsNamedUUID(name string) []any       { return []any{"named-uuid", name} }
func cond(col, fn string, val any) []any   { return []any{col, fn, val} }
func mutation(col, fn string, v any) []any { return []any{col, fn, v} }

func ovsMap(m map[string]string) []any {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	pairs := make([]any, len(keys))
	for i, k := range keys {
		pairs[i] = []any{k, m[k]}
	}
	return []any{"map", pairs}
}

// guard is a "wait" with timeout 0: the transaction fails unless the rows
// of table matching where are (until "==") or are not (until "!=") none.
func guard(table string, where []any, until string) map[string]any {
	return map[string]any{"op": "wait", "table": table, "where": where, "columns": []string{"_uuid"},
		"until": until, "rows": []any{}, "timeout": 0}
}

// incrementNextCfg are ovs-vsctl's last two operations of a write: next_cfg
// += 1 and a select reading the new value back.
func incrementNextCfg() []any {
	return []any{
		map[string]any{"op": "mutate", "table": "Open_vSwitch", "where": []any{},
			"mutations": []any{mutation("next_cfg", "+=", 1)}},
		map[string]any{"op": "select", "table": "Open_vSwitch", "where": []any{}, "columns": []string{"next_cfg"}},
	}
}

// txnFailure returns the first failed operation's error in results (or the
// commit's, which follows the operations), naming ops[i]'s op.
func txnFailure(results []opResult) (int, error) {
	for i, r := range results {
		if r.Error != "" {
			return i, fmt.Errorf("%s: %s", r.Error, r.Details)
		}
	}
	return -1, nil
}

// nextCfgOf reads the next_cfg the increment's select returned.
func nextCfgOf(r opResult) (int, error) {
	if len(r.Rows) != 1 {
		return 0, fmt.Errorf("ovsdb: %d Open_vSwitch rows", len(r.Rows))
	}
	n, ok, err := ovsdbOptInt(r.Rows[0]["next_cfg"])
	if err != nil || !ok {
		return 0, fmt.Errorf("ovsdb: bad next_cfg %s: %v", r.Rows[0]["next_cfg"], err)
	}
	return n, nil
}

// waitReload waits until ovs-vswitchd has applied configuration nextCfg
// (cur_cfg >= nextCfg) and returns the ofport of the interface named iface
// then (-1 when OVS could not open it), when iface is not empty. The wait
// is ovsdb-server's: it answers once no Open_vSwitch row has a smaller
// cur_cfg, or "timed out" a little before ctx's deadline.
func (db *dbConn) waitReload(ctx context.Context, nextCfg int, iface string) (int, error) {
	timeout := 10 * time.Second
	if deadline, ok := ctx.Deadline(); ok {
		// Leave the server time to say "timed out" before our socket
		// deadline, for a clearer error.
		timeout = time.Until(deadline) - time.Until(deadline)/10
	}
	if timeout < time.Millisecond {
		timeout = time.Millisecond
	}
	ops := []any{map[string]any{"op": "wait", "table": "Open_vSwitch",
		"where": []any{cond("cur_cfg", "<", nextCfg)}, "columns": []string{"cur_cfg"},
		"until": "==", "rows": []any{}, "timeout": timeout.Milliseconds()}}
	if iface != "" {
		ops = append(ops, map[string]any{"op": "select", "table": "Interface",
			"where": []any{cond("name", "==", iface)}, "columns": []string{"ofport"}})
	}
	results, err := db.transact(ops)
	if err != nil {
		return 0, fmt.Errorf("wait for ovs-vswitchd to apply configuration %d: %w", nextCfg, err)
	}
	if _, err := txnFailure(results); err != nil {
		return 0, fmt.Errorf("wait for ovs-vswitchd to apply configuration %d (is it running?): %w", nextCfg, err)
	}
	if iface == "" {
		return 0, nil
	}
	ofport := -1
	if rows := results[1].Rows; len(rows) == 1 {
		if n, ok, err := ovsdbOptInt(rows[0]["ofport"]); err == nil && ok {
			ofport = n
		}
	}
	return ofport, nil
}

// wantAccess is what addAccessPortDB sets on the Port and Interface.
type wantAccess struct {
	tag int
	ids map[string]string
}

// tagValue is the Port tag column's value: the tag, or empty (untagged).
func (w wantAccess) tagValue() any {
	if w.tag > 0 {
		return w.tag
	}
	return ovsSet()
}

// addAccessPortDB is addAccessPort's transaction in process.
func (c *Client) addAccessPortDB(ctx context.Context, bridge, port string, tag int, ids ExternalIDs) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	db, err := c.dialDB(ctx)
	if err != nil {
		return err
	}
	defer db.close()
	start := time.Now()
	want := wantAccess{tag: tag, ids: map[string]string{
		KeyIfaceID: ids.IfaceID, KeyAttachedMAC: ids.AttachedMAC, KeyVMUUID: ids.VMUUID, KeyIfaceStatus: "active"}}
	for try := 1; ; try++ {
		nextCfg, changed, err := c.tryAddAccessPort(db, bridge, port, want)
		if errors.Is(err, errTryAgain) && try < maxTxnTries {
			continue
		}
		if err != nil {
			return fmt.Errorf("ovs: add access port %s to %s (tag %d): %w", port, bridge, tag, withCtx(ctx, err))
		}
		ofport := 0
		if changed {
			if ofport, err = db.waitReload(ctx, nextCfg, port); err != nil {
				return fmt.Errorf("ovs: add access port %s to %s (tag %d): %w", port, bridge, tag, withCtx(ctx, err))
			}
			if ofport <= 0 {
				// What ovs-vsctl prints after the reload (its exit status
				// stays 0); the callers check the port's ofport themselves.
				c.log.Warn("ovs-vswitchd could not set up the port; see its log", "port", port, "bridge", bridge)
			}
		}
		c.log.Debug("ovsdb transact", "op", "add-port", "bridge", bridge, "port", port, "tag", tag,
			"changed", changed, "next_cfg", nextCfg, "ofport", ofport, "tries", try, "took", time.Since(start))
		return nil
	}
}

// tryAddAccessPort makes one attempt: insert a new port, or update the
// existing one. It returns the next_cfg to wait for and whether anything
// was written.
func (c *Client) tryAddAccessPort(db *dbConn, bridge, port string, want wantAccess) (int, bool, error) {
	byName := []any{cond("name", "==", port)}
	ops := []any{
		guard("Bridge", []any{cond("name", "==", bridge)}, "!="),
		guard("Port", byName, "=="),
		guard("Interface", byName, "=="),
		map[string]any{"op": "insert", "table": "Interface", "uuid-name": "iface",
			"row": map[string]any{"name": port, "external_ids": ovsMap(want.ids)}},
		map[string]any{"op": "insert", "table": "Port", "uuid-name": "port",
			"row": map[string]any{"name": port, "interfaces": ovsNamedUUID("iface"),
				"tag": want.tagValue(), "vlan_mode": "access"}},
		map[string]any{"op": "mutate", "table": "Bridge", "where": []any{cond("name", "==", bridge)},
			"mutations": []any{mutation("ports", "insert", ovsSet(ovsNamedUUID("port")))}},
	}
	ops = append(ops, incrementNextCfg()...)
	results, err := db.transact(ops)
	if err != nil {
		return 0, false, err
	}
	switch i, err := txnFailure(results); i {
	case -1:
		n, err := nextCfgOf(results[len(ops)-1])
		return n, true, err
	case 0:
		return 0, false, fmt.Errorf("no bridge named %s", bridge)
	case 1: // a port of that name exists: --may-exist
		return c.updateAccessPort(db, bridge, port, want)
	case 2:
		return 0, false, fmt.Errorf("cannot create an interface named %s because an interface named %s already exists", port, port)
	default:
		return 0, false, err
	}
}

// updateAccessPort is --may-exist add-port's existing-port case followed by
// the "set Port"/"set Interface" of the same ovs-vsctl transaction.
func (c *Client) updateAccessPort(db *dbConn, bridge, port string, want wantAccess) (int, bool, error) {
	byName := []any{cond("name", "==", port)}
	results, err := db.transact([]any{
		map[string]any{"op": "select", "table": "Port", "where": byName,
			"columns": []string{"_uuid", "interfaces", "tag", "vlan_mode", "trunks"}},
		map[string]any{"op": "select", "table": "Interface", "where": byName, "columns": []string{"_uuid", "external_ids"}},
		map[string]any{"op": "select", "table": "Bridge", "where": []any{}, "columns": []string{"name", "ports"}},
	})
	if err != nil {
		return 0, false, err
	}
	if _, err := txnFailure(results); err != nil {
		return 0, false, err
	}
	if len(results[0].Rows) != 1 {
		return 0, false, errTryAgain // deleted since the insert failed
	}
	prow := results[0].Rows[0]
	portUUID, err := ovsdbUUID(prow["_uuid"])
	if err != nil {
		return 0, false, err
	}
	onBridge := ""
	for _, b := range results[2].Rows {
		name, err := ovsdbString(b["name"])
		if err != nil {
			return 0, false, err
		}
		ports, err := ovsdbUUIDSet(b["ports"])
		if err != nil {
			return 0, false, err
		}
		for _, p := range ports {
			if p == portUUID {
				onBridge = name
			}
		}
	}
	switch {
	case onBridge == "":
		return 0, false, errTryAgain // being added or removed concurrently
	case onBridge == port:
		return 0, false, fmt.Errorf("cannot create a port named %s because a bridge named %s already exists", port, port)
	case onBridge != bridge:
		return 0, false, fmt.Errorf("\"--may-exist add-port %s %s\" but %s is actually attached to bridge %s", bridge, port, port, onBridge)
	}
	ifaces, err := ovsdbUUIDSet(prow["interfaces"])
	if err != nil {
		return 0, false, err
	}
	if len(results[1].Rows) != 1 || len(ifaces) != 1 {
		return 0, false, fmt.Errorf("\"--may-exist add-port %s %s\" but %s has %d interfaces, not one named %s", bridge, port, port, len(ifaces), port)
	}
	irow := results[1].Rows[0]
	ifaceUUID, err := ovsdbUUID(irow["_uuid"])
	if err != nil {
		return 0, false, err
	}
	if ifaces[0] != ifaceUUID {
		return 0, false, fmt.Errorf("\"--may-exist add-port %s %s\" but %s's interface is not the one named %s", bridge, port, port, port)
	}

	// Nothing to change: ovs-vsctl's transaction would be unchanged, and it
	// would not wait for ovs-vswitchd.
	tag, _, err := ovsdbOptInt(prow["tag"])
	if err != nil {
		return 0, false, err
	}
	modes, err := ovsdbSet(prow["vlan_mode"])
	if err != nil {
		return 0, false, err
	}
	trunks, err := ovsdbSet(prow["trunks"])
	if err != nil {
		return 0, false, err
	}
	have, err := ovsdbMap(irow["external_ids"])
	if err != nil {
		return 0, false, err
	}
	same := tag == want.tag && len(modes) == 1 && string(modes[0]) == `"access"` && len(trunks) == 0
	for k, v := range want.ids {
		if got, ok := have[k]; !ok || got != v {
			same = false
		}
	}
	if same {
		return 0, false, nil
	}

	keys := make([]any, 0, len(want.ids))
	for k := range want.ids {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].(string) < keys[j].(string) })
	ops := []any{
		// The port is still this bridge's, with this one interface.
		guard("Bridge", []any{cond("name", "==", bridge), cond("ports", "includes", ovsUUID(portUUID))}, "!="),
		guard("Port", []any{cond("_uuid", "==", ovsUUID(portUUID)), cond("interfaces", "==", ovsSet(ovsUUID(ifaceUUID)))}, "!="),
		map[string]any{"op": "update", "table": "Port", "where": []any{cond("_uuid", "==", ovsUUID(portUUID))},
			"row": map[string]any{"tag": want.tagValue(), "vlan_mode": "access", "trunks": ovsSet()}},
		// Only these keys, as "set Interface external_ids:KEY=VALUE": a
		// map insert does not overwrite, so delete them first.
		map[string]any{"op": "mutate", "table": "Interface", "where": []any{cond("_uuid", "==", ovsUUID(ifaceUUID))},
			"mutations": []any{
				mutation("external_ids", "delete", ovsSet(keys...)),
				mutation("external_ids", "insert", ovsMap(want.ids)),
			}},
	}
	ops = append(ops, incrementNextCfg()...)
	results, err = db.transact(ops)
	if err != nil {
		return 0, false, err
	}
	switch i, err := txnFailure(results); i {
	case -1:
		n, err := nextCfgOf(results[len(ops)-1])
		return n, true, err
	case 0, 1:
		return 0, false, errTryAgain
	default:
		return 0, false, err
	}
}

// deletePortDB is "ovs-vsctl --if-exists del-port port" in process.
func (c *Client) deletePortDB(ctx context.Context, port string) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	db, err := c.dialDB(ctx)
	if err != nil {
		return err
	}
	defer db.close()
	start := time.Now()
	for try := 1; ; try++ {
		bridge, nextCfg, err := tryDeletePort(db, port)
		if errors.Is(err, errTryAgain) && try < maxTxnTries {
			continue
		}
		if err != nil {
			return fmt.Errorf("ovs: delete port %s: %w", port, withCtx(ctx, err))
		}
		if bridge != "" {
			if _, err := db.waitReload(ctx, nextCfg, ""); err != nil {
				return fmt.Errorf("ovs: delete port %s: %w", port, withCtx(ctx, err))
			}
		}
		c.log.Debug("ovsdb transact", "op", "del-port", "port", port, "bridge", bridge,
			"next_cfg", nextCfg, "tries", try, "took", time.Since(start))
		return nil
	}
}

// tryDeletePort removes port from its bridge and returns the bridge ("" when
// there was no such port: nothing written) and the next_cfg to wait for.
func tryDeletePort(db *dbConn, port string) (string, int, error) {
	results, err := db.transact([]any{
		map[string]any{"op": "select", "table": "Port", "where": []any{cond("name", "==", port)}, "columns": []string{"_uuid"}},
		map[string]any{"op": "select", "table": "Bridge", "where": []any{}, "columns": []string{"_uuid", "name", "ports"}},
	})
	if err != nil {
		return "", 0, err
	}
	if _, err := txnFailure(results); err != nil {
		return "", 0, err
	}
	if len(results[0].Rows) == 0 {
		return "", 0, nil
	}
	portUUID, err := ovsdbUUID(results[0].Rows[0]["_uuid"])
	if err != nil {
		return "", 0, err
	}
	var bridge, bridgeUUID string
	for _, b := range results[1].Rows {
		ports, err := ovsdbUUIDSet(b["ports"])
		if err != nil {
			return "", 0, err
		}
		for _, p := range ports {
			if p != portUUID {
				continue
			}
			if bridge, err = ovsdbString(b["name"]); err != nil {
				return "", 0, err
			}
			if bridgeUUID, err = ovsdbUUID(b["_uuid"]); err != nil {
				return "", 0, err
			}
		}
	}
	if bridge == "" || bridge == port {
		// Not on a bridge, or the bridge's own local port, which
		// --if-exists del-port leaves alone (only del-br removes it).
		return "", 0, nil
	}
	ops := []any{
		guard("Bridge", []any{cond("_uuid", "==", ovsUUID(bridgeUUID)), cond("ports", "includes", ovsUUID(portUUID))}, "!="),
		map[string]any{"op": "mutate", "table": "Bridge", "where": []any{cond("_uuid", "==", ovsUUID(bridgeUUID))},
			"mutations": []any{mutation("ports", "delete", ovsSet(ovsUUID(portUUID)))}},
	}
	ops = append(ops, incrementNextCfg()...)
	results, err = db.transact(ops)
	if err != nil {
		return "", 0, err
	}
	switch i, err := txnFailure(results); i {
	case -1:
		n, err := nextCfgOf(results[len(ops)-1])
		return bridge, n, err
	case 0:
		return "", 0, errTryAgain // deleted or moved concurrently: look again
	default:
		return "", 0, err
	}
}
