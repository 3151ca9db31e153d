package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/store"
)

// enqueue commits n messages to queue "q" about instance "i1" and
// returns their batch.
func enqueue(t *testing.T, st *store.Store, n int) *outbox.Batch {
	t.Helper()
	var b outbox.Batch
	err := st.DB.Transaction(func(tx *gorm.DB) error {
		for i := range n {
			m, err := bus.NewMessage("k", map[string]int{"n": i})
			if err != nil {
				return err
			}
			if err := b.Enqueue(tx, "q", "i1", m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &b
}

func rows(t *testing.T, st *store.Store) int64 {
	t.Helper()
	var n int64
	if err := st.DB.Model(&store.OutboxMessage{}).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRolledBackMessageNeverLeaves: a message enqueued by a transaction
// that rolled back is not in the outbox (it goes with its state change).
func TestRolledBackMessageNeverLeaves(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		var b outbox.Batch
		err := st.DB.Transaction(func(tx *gorm.DB) error {
			m, _ := bus.NewMessage("k", nil)
			if err := b.Enqueue(tx, "q", "i1", m); err != nil {
				return err
			}
			return errors.New("refused")
		})
		if err == nil {
			t.Fatal("transaction committed")
		}
		if n := rows(t, st); n != 0 {
			t.Errorf("%d rows after a rollback", n)
		}
	})
}

// TestDeliverPublishesInOrderAndDeletes: the writer's own delivery
// publishes its rows with their message ids, in order, and removes them.
func TestDeliverPublishesInOrderAndDeletes(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		b := bus.NewMem()
		defer b.Close()
		batch := enqueue(t, st, 3)
		r := outbox.NewRelay(st, b, outbox.Options{Owner: "api"})
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // a client that hung up does not stop the delivery
		if err := r.Deliver(ctx, batch); err != nil {
			t.Fatal(err)
		}
		sent := b.Sent("q")
		if len(sent) != 3 {
			t.Fatalf("%d messages published, want 3", len(sent))
		}
		for i, m := range sent {
			var body map[string]int
			if err := m.Decode(&body); err != nil || body["n"] != i || m.ID == "" {
				t.Errorf("message %d: %+v %v", i, body, err)
			}
		}
		if n := rows(t, st); n != 0 {
			t.Errorf("%d rows left after delivery", n)
		}
	})
}

// failingBus refuses every publish.
type failingBus struct{ *bus.Mem }

func (failingBus) Publish(context.Context, string, bus.Message) error {
	return errors.New("broker unreachable")
}

// TestFailedPublishWaitsForTheRelay: a publish that fails leaves the row,
// due again after the back-off; the relay loop delivers it once the
// broker is back.
func TestFailedPublishWaitsForTheRelay(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		mem := bus.NewMem()
		defer mem.Close()
		batch := enqueue(t, st, 1)
		down := outbox.NewRelay(st, failingBus{mem}, outbox.Options{Owner: "api", Backoff: 50 * time.Millisecond})
		if err := down.Deliver(context.Background(), batch); err == nil {
			t.Fatal("delivery over a broken broker succeeded")
		}
		if n := rows(t, st); n != 1 {
			t.Fatalf("%d rows after a failed publish, want 1", n)
		}
		up := outbox.NewRelay(st, mem, outbox.Options{Owner: "conductor", Interval: 20 * time.Millisecond})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { up.Run(ctx); close(done) }()
		deadline := time.Now().Add(5 * time.Second)
		for len(mem.Sent("q")) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
		if n := len(mem.Sent("q")); n != 1 {
			t.Errorf("relay published %d messages, want 1", n)
		}
		if n := rows(t, st); n != 0 {
			t.Errorf("%d rows left after the relay", n)
		}
	})
}

// TestRelayKilledMidRelay is the conductor's kill point: a relay claimed
// rows and died before publishing them. Nobody takes them while the
// claim lasts; once it expired another relay publishes them.
func TestRelayKilledMidRelay(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		enqueue(t, st, 2)
		now := time.Now().UTC()
		claimed, err := st.ClaimOutbox(context.Background(), "dead-conductor", now, time.Minute, 10)
		if err != nil || len(claimed) != 2 {
			t.Fatalf("claim: %d rows, %v", len(claimed), err)
		}
		mem := bus.NewMem()
		defer mem.Close()
		// Within the claim: nothing for another relay.
		other := outbox.NewRelay(st, mem, outbox.Options{Owner: "conductor-2"})
		if n, err := other.Pass(context.Background()); err != nil || n != 0 {
			t.Fatalf("another relay took claimed rows: %d, %v", n, err)
		}
		// After it: the other relay publishes them.
		later := outbox.NewRelay(st, mem, outbox.Options{Owner: "conductor-2",
			Now: func() time.Time { return now.Add(2 * time.Minute) }})
		if n, err := later.Pass(context.Background()); err != nil || n != 2 {
			t.Fatalf("after the claim expired: published %d, %v", n, err)
		}
		if n := rows(t, st); n != 0 {
			t.Errorf("%d rows left", n)
		}
	})
}

// TestConcurrentRelaysShareTheRows: relays running side by side (several
// conductors on one database) publish every row, none twice.
func TestConcurrentRelaysShareTheRows(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		const total = 60
		for range total / 10 {
			enqueue(t, st, 10)
		}
		mem := bus.NewMem()
		defer mem.Close()
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := outbox.NewRelay(st, mem, outbox.Options{Owner: fmt.Sprintf("c%d", i), BatchSize: 5})
				for {
					n, err := r.Pass(context.Background())
					if err != nil {
						errs <- err
						return
					}
					if n == 0 {
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		seen := map[string]int{}
		for _, m := range mem.Sent("q") {
			seen[m.ID]++
		}
		if len(seen) != total {
			t.Errorf("%d distinct messages published, want %d", len(seen), total)
		}
		for id, n := range seen {
			if n > 1 {
				t.Errorf("message %s published %d times", id, n)
			}
		}
		if n := rows(t, st); n != 0 {
			t.Errorf("%d rows left", n)
		}
	})
}
