// Package outbox is the transactional outbox of the control plane: a
// state change and the bus message it implies commit in one database
// transaction (Enqueue writes the message as a row of store's outbox
// table), and a Relay publishes the rows to the broker afterwards, with
// confirms, deleting each one the broker confirmed.
//
// So a crash between the commit and the publish (an API process killed,
// a broker unreachable) delays the message instead of losing it, and a
// client that hangs up cannot take back work that was committed. The
// role that committed delivers its own rows at once (Deliver); the
// conductor's relay loop (Run) delivers whatever is left: rows whose
// writer died before delivering them, rows whose publish failed, rows a
// relay claimed and never finished (its claim expires). A message may
// thus be published twice (a relay died between the confirm and the
// delete): every consumer is idempotent, as the bus requires anyway.
package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/store"
)

// Batch collects the rows one transaction enqueued, for Deliver once the
// transaction committed. The zero value is ready to use.
type Batch struct{ ids []uint }

// Enqueue writes m for queue in tx, about the server instanceID ("" for
// none), and adds the row to b.
func (b *Batch) Enqueue(tx *gorm.DB, queue, instanceID string, m bus.Message) error {
	now := time.Now().UTC()
	row := store.OutboxMessage{Queue: queue, MessageID: m.ID, Kind: m.Kind, Body: string(m.Body),
		InstanceID: instanceID, CreatedAt: now, DueAt: now}
	if err := tx.Create(&row).Error; err != nil {
		return fmt.Errorf("outbox: enqueue %s for %s: %w", m.Kind, queue, err)
	}
	b.ids = append(b.ids, row.ID)
	return nil
}

// Len is how many rows b holds.
func (b *Batch) Len() int { return len(b.ids) }

// Options tune a Relay; zero values take the defaults.
type Options struct {
	// Owner names this relay in the rows it claims (host:pid, say).
	Owner string
	// Interval is how often Run looks for rows (default 1s).
	Interval time.Duration
	// Lease is how long a claim lasts: a relay that died holding rows
	// leaves them to another one after it (default 30s). It must exceed
	// the time a publish may take (PublishTimeout).
	Lease time.Duration
	// PublishTimeout bounds one publish (default 10s).
	PublishTimeout time.Duration
	// Backoff is how long a row whose publish failed waits before it is
	// tried again (default 2s).
	Backoff time.Duration
	// BatchSize is how many rows one pass claims (default 100).
	BatchSize int
	Log       *slog.Logger
	Now       func() time.Time
}

// Relay publishes outbox rows to the bus.
type Relay struct {
	st  *store.Store
	b   bus.Bus
	opt Options
}

// NewRelay returns a relay publishing st's outbox rows on b.
func NewRelay(st *store.Store, b bus.Bus, opt Options) *Relay {
	if opt.Interval <= 0 {
		opt.Interval = time.Second
	}
	if opt.PublishTimeout <= 0 {
		opt.PublishTimeout = 10 * time.Second
	}
	if opt.Lease <= 0 {
		opt.Lease = 30 * time.Second
	}
	if opt.Lease < 2*opt.PublishTimeout {
		opt.Lease = 2 * opt.PublishTimeout
	}
	if opt.Backoff <= 0 {
		opt.Backoff = 2 * time.Second
	}
	if opt.BatchSize <= 0 {
		opt.BatchSize = 100
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = func() time.Time { return time.Now().UTC() }
	}
	if opt.Owner == "" {
		opt.Owner = "relay"
	}
	return &Relay{st: st, b: b, opt: opt}
}

// Deliver publishes the rows b enqueued, now that their transaction
// committed. It does not use ctx's cancellation (a client that hung up
// must not stop a message whose state change committed) and returns the
// first failure; a row that could not be published stays for the relay
// loop, so a caller may treat its work as accepted either way.
func (r *Relay) Deliver(ctx context.Context, b *Batch) error {
	if b == nil || len(b.ids) == 0 {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	rows, err := r.st.ClaimOutbox(ctx, r.opt.Owner, r.opt.Now(), r.opt.Lease, len(b.ids), b.ids...)
	if err != nil {
		return err
	}
	_, err = r.publish(ctx, rows)
	return err
}

// Pass claims the rows due now and publishes them; it returns how many it
// published and the first failure.
func (r *Relay) Pass(ctx context.Context) (int, error) {
	rows, err := r.st.ClaimOutbox(ctx, r.opt.Owner, r.opt.Now(), r.opt.Lease, r.opt.BatchSize)
	if err != nil {
		return 0, err
	}
	return r.publish(ctx, rows)
}

// Run relays due rows every Interval until ctx ends; a pass that found a
// full batch goes on at once.
func (r *Relay) Run(ctx context.Context) {
	t := time.NewTicker(r.opt.Interval)
	defer t.Stop()
	for {
		n, err := r.Pass(ctx)
		if err != nil && ctx.Err() == nil {
			r.opt.Log.Warn("outbox relay", "error", err)
		}
		if n > 0 {
			r.opt.Log.Debug("outbox relayed", "messages", n)
		}
		if n >= r.opt.BatchSize && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maxBackoff bounds the wait between two publishes of one row.
const maxBackoff = time.Minute

// backoff is how long a row waits after its attempts-th failed publish:
// Backoff, doubling, at most maxBackoff.
func (r *Relay) backoff(attempts int) time.Duration {
	d := r.opt.Backoff
	for i := 1; i < attempts && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// publish sends rows in order, each with the broker's confirm, and deletes
// the confirmed ones; a row whose publish failed is due again after the
// back-off.
func (r *Relay) publish(ctx context.Context, rows []store.OutboxMessage) (int, error) {
	var sent []uint
	var first error
	for _, row := range rows {
		m := bus.Message{ID: row.MessageID, Kind: row.Kind, Body: []byte(row.Body)}
		pctx, cancel := context.WithTimeout(ctx, r.opt.PublishTimeout)
		err := r.b.Publish(pctx, row.Queue, m)
		cancel()
		if err != nil {
			r.opt.Log.Warn("outbox publish failed; retrying later", "queue", row.Queue, "kind", row.Kind,
				"message_id", row.MessageID, "attempt", row.Attempts, "error", err)
			if first == nil {
				first = fmt.Errorf("outbox: publish %s to %s: %w", row.Kind, row.Queue, err)
			}
			if rerr := r.st.RetryOutbox(context.WithoutCancel(ctx), row.ID, r.opt.Owner, r.opt.Now().Add(r.backoff(row.Attempts))); rerr != nil {
				r.opt.Log.Warn("outbox: reschedule", "error", rerr)
			}
			continue
		}
		sent = append(sent, row.ID)
	}
	if err := r.st.DeleteOutbox(context.WithoutCancel(ctx), sent...); err != nil && first == nil {
		first = err
	}
	return len(sent), first
}
