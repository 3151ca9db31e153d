package ovs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// A read of the Open_vSwitch database over its unix socket (RFC 7047's
// JSON-RPC "transact"), in process: the port lookups a boot makes cost a
// socket round trip, not an ovs-vsctl process (tens of milliseconds on a
// loaded host). Writes stay with ovs-vsctl, whose --may-exist semantics and
// wait for ovs-vswitchd the plumbing relies on.

// defaultDBSocket is where ovs-vsctl looks for ovsdb-server by default:
// $OVS_RUNDIR/db.sock, OVS_RUNDIR defaulting to /var/run/openvswitch.
func defaultDBSocket() string {
	dir := os.Getenv("OVS_RUNDIR")
	if dir == "" {
		dir = "/var/run/openvswitch"
	}
	return filepath.Join(dir, "db.sock")
}

// rpcRequest and rpcResponse are JSON-RPC 1.0 messages as OVSDB uses them.
type rpcRequest struct {
	Method string `json:"method"`
	Params []any  `json:"params"`
	ID     any    `json:"id"`
}

type rpcResponse struct {
	Method string            `json:"method"` // set on requests from the server (echo)
	Params json.RawMessage   `json:"params"`
	Result []json.RawMessage `json:"result"`
	Error  json.RawMessage   `json:"error"`
	ID     json.RawMessage   `json:"id"`
}

// ovsdbOp is one operation of a transaction.
type ovsdbOp struct {
	Op      string   `json:"op"`
	Table   string   `json:"table"`
	Where   []any    `json:"where"`
	Columns []string `json:"columns,omitempty"`
}

// opResult is one operation's result; select fills Rows.
type opResult struct {
	Rows    []map[string]json.RawMessage `json:"rows"`
	Error   string                       `json:"error"`
	Details string                       `json:"details"`
}

// errNoDBSocket means ovsdb-server's socket could not be reached: the
// caller falls back to ovs-vsctl, which may know another way to it.
var errNoDBSocket = errors.New("ovsdb socket unreachable")

// selectAll runs the selects ops in one read-only transaction (one
// consistent view) on the Open_vSwitch database at c.dbSocket and returns
// each one's rows.
func (c *Client) selectAll(ctx context.Context, ops []ovsdbOp) ([][]map[string]json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.dbSocket)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoDBSocket, err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, err
	}
	params := []any{"Open_vSwitch"}
	for _, op := range ops {
		params = append(params, op)
	}
	start := time.Now()
	enc, dec := json.NewEncoder(conn), json.NewDecoder(conn)
	if err := enc.Encode(rpcRequest{Method: "transact", Params: params, ID: 1}); err != nil {
		return nil, fmt.Errorf("ovsdb transact: send: %w", err)
	}
	for {
		var resp rpcResponse
		if err := dec.Decode(&resp); err != nil {
			return nil, fmt.Errorf("ovsdb transact: read reply: %w", err)
		}
		if resp.Method == "echo" { // the server's keepalive: answer it
			if err := enc.Encode(map[string]any{"result": resp.Params, "error": nil, "id": resp.ID}); err != nil {
				return nil, fmt.Errorf("ovsdb transact: answer echo: %w", err)
			}
			continue
		}
		if resp.Method != "" || string(resp.ID) != "1" {
			continue // a notification not meant for this request
		}
		if len(resp.Error) > 0 && string(resp.Error) != "null" {
			return nil, fmt.Errorf("ovsdb transact: %s", resp.Error)
		}
		if len(resp.Result) < len(ops) {
			return nil, fmt.Errorf("ovsdb transact: %d results for %d operations", len(resp.Result), len(ops))
		}
		out := make([][]map[string]json.RawMessage, len(ops))
		for i := range ops {
			var r opResult
			if err := json.Unmarshal(resp.Result[i], &r); err != nil {
				return nil, fmt.Errorf("ovsdb transact: result %d: %w", i, err)
			}
			if r.Error != "" {
				return nil, fmt.Errorf("ovsdb transact: %s on %s: %s: %s", ops[i].Op, ops[i].Table, r.Error, r.Details)
			}
			out[i] = r.Rows
		}
		c.log.Debug("ovsdb select", "socket", c.dbSocket, "tables", len(ops), "took", time.Since(start))
		return out, nil
	}
}
