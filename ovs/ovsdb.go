package ovs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Transactions on the Open_vSwitch database over its unix socket (RFC 7047's
// JSON-RPC "transact"), in process: the port lookups a boot makes, and the
// add-port and del-port of every plug and unplug (ovsdb_write.go), cost a
// socket round trip, not an ovs-vsctl process (tens of milliseconds of CPU
// on a loaded host). Other writes (bridges, trunk and patch ports) stay with
// ovs-vsctl.

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

// opResult is one operation's result; select fills Rows, update and
// mutate Count.
type opResult struct {
	Rows    []map[string]json.RawMessage `json:"rows"`
	Count   int                          `json:"count"`
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
	db, err := c.dialDB(ctx)
	if err != nil {
		return nil, err
	}
	defer db.close()
	start := time.Now()
	anyOps := make([]any, len(ops))
	for i, op := range ops {
		anyOps[i] = op
	}
	results, err := db.transact(anyOps)
	if err != nil {
		return nil, err
	}
	out := make([][]map[string]json.RawMessage, len(ops))
	for i, r := range results[:len(ops)] {
		if r.Error != "" {
			return nil, fmt.Errorf("ovsdb transact: %s on %s: %s: %s", ops[i].Op, ops[i].Table, r.Error, r.Details)
		}
		out[i] = r.Rows
	}
	c.log.Debug("ovsdb select", "socket", c.dbSocket, "tables", len(ops), "took", time.Since(start))
	return out, nil
}

// dbConn is one JSON-RPC connection to ovsdb-server, used for a few
// transactions in a row by one goroutine.
type dbConn struct {
	conn   net.Conn
	enc    *json.Encoder
	dec    *json.Decoder
	nextID int
	stop   func() bool // unregisters the ctx cancellation hook
}

// dialDB connects to c.dbSocket; the connection's deadline is ctx's, and
// cancelling ctx interrupts whatever it is waiting for. An unreachable
// socket is errNoDBSocket.
func (c *Client) dialDB(ctx context.Context) (*dbConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.dbSocket)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoDBSocket, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			conn.Close()
			return nil, err
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return &dbConn{conn: conn, enc: json.NewEncoder(conn), dec: json.NewDecoder(conn), nextID: 1, stop: stop}, nil
}

func (db *dbConn) close() {
	db.stop()
	db.conn.Close()
}

// transact runs ops (ovsdbOp or map values) as one transaction on the
// Open_vSwitch database and returns the results: one per operation, and one
// more when the commit itself failed (RFC 7047 5.2: a failed operation ends
// the transaction, its error in its result, later results null).
func (db *dbConn) transact(ops []any) ([]opResult, error) {
	id := db.nextID
	db.nextID++
	if err := db.enc.Encode(rpcRequest{Method: "transact", Params: append([]any{"Open_vSwitch"}, ops...), ID: id}); err != nil {
		return nil, fmt.Errorf("ovsdb transact: send: %w", err)
	}
	for {
		var resp rpcResponse
		if err := db.dec.Decode(&resp); err != nil {
			return nil, fmt.Errorf("ovsdb transact: read reply: %w", err)
		}
		if resp.Method == "echo" { // the server's keepalive: answer it
			if err := db.enc.Encode(map[string]any{"result": resp.Params, "error": nil, "id": resp.ID}); err != nil {
				return nil, fmt.Errorf("ovsdb transact: answer echo: %w", err)
			}
			continue
		}
		if resp.Method != "" || string(resp.ID) != strconv.Itoa(id) {
			continue // a notification not meant for this request
		}
		if len(resp.Error) > 0 && string(resp.Error) != "null" {
			return nil, fmt.Errorf("ovsdb transact: %s", resp.Error)
		}
		if len(resp.Result) < len(ops) {
			return nil, fmt.Errorf("ovsdb transact: %d results for %d operations", len(resp.Result), len(ops))
		}
		out := make([]opResult, len(resp.Result))
		for i, raw := range resp.Result {
			if string(raw) == "null" {
				continue // not executed: an earlier operation failed
			}
			if err := json.Unmarshal(raw, &out[i]); err != nil {
				return nil, fmt.Errorf("ovsdb transact: result %d: %w", i, err)
			}
		}
		return out, nil
	}
}
