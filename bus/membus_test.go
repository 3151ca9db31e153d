package bus

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func memHarness() harness {
	const delay = 50 * time.Millisecond
	return harness{
		newBus: func(t *testing.T) Bus {
			b := NewMem(MemRetryDelay(delay))
			t.Cleanup(func() { b.Close() })
			return b
		},
		queue:      uniqueQueue,
		retryDelay: delay,
	}
}

func TestMemConformance(t *testing.T) {
	t.Parallel()
	runConformance(t, memHarness())
}

func TestMemSentAndPending(t *testing.T) {
	b := NewMem()
	defer b.Close()
	ctx := testCtx(t, 5*time.Second)
	m1, m2 := mustMsg(t, "a", 1), mustMsg(t, "b", 2)
	for _, m := range []Message{m1, m2} {
		if err := b.Publish(ctx, ComputeQueue("h1"), m); err != nil {
			t.Fatal(err)
		}
	}
	if s := b.Sent(ComputeQueue("h1")); len(s) != 2 || s[0].ID != m1.ID || s[1].ID != m2.ID {
		t.Fatalf("Sent = %+v", s)
	}
	if p := b.Pending(ComputeQueue("h1")); len(p) != 2 {
		t.Fatalf("Pending = %+v", p)
	}
	if s := b.Sent("other"); s != nil {
		t.Fatalf("Sent(other) = %+v", s)
	}
	// Unconsumed queues do not keep WaitIdle from returning.
	if err := b.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Consume(ctx, ComputeQueue("h1"), func(context.Context, Message) (any, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if p := b.Pending(ComputeQueue("h1")); len(p) != 0 {
		t.Fatalf("Pending after drain = %+v", p)
	}
	if s := b.Sent(ComputeQueue("h1")); len(s) != 2 {
		t.Fatalf("Sent after drain = %+v", s)
	}
}

// WaitIdle must cover chains: a handler publishing to another queue, and
// retries waiting for their delay.
func TestMemWaitIdleFollowsChains(t *testing.T) {
	b := NewMem(MemRetryDelay(30 * time.Millisecond))
	defer b.Close()
	ctx := testCtx(t, 5*time.Second)
	var done atomic.Int32
	var tries atomic.Int32
	if err := b.Consume(ctx, SchedulerQueue, func(ctx context.Context, m Message) (any, error) {
		time.Sleep(20 * time.Millisecond)
		return nil, b.Publish(ctx, ConductorQueue, mustMsg(t, "next", nil))
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Consume(ctx, ConductorQueue, func(ctx context.Context, m Message) (any, error) {
		if tries.Add(1) < 3 {
			return nil, Retry(errors.New("later"))
		}
		done.Add(1)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, SchedulerQueue, mustMsg(t, "start", nil)); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if done.Load() != 1 || tries.Load() != 3 {
		t.Fatalf("done=%d tries=%d after WaitIdle", done.Load(), tries.Load())
	}
}

func TestMemWaitIdleHonoursContext(t *testing.T) {
	b := NewMem()
	defer b.Close()
	ctx := testCtx(t, 5*time.Second)
	release := make(chan struct{})
	defer close(release)
	if err := b.Consume(ctx, "q", func(context.Context, Message) (any, error) {
		<-release
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "q", mustMsg(t, "x", nil)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := b.WaitIdle(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitIdle = %v, want deadline exceeded", err)
	}
}
