package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/google/uuid"
)

// harness gives the shared behavioural tests a bus and fresh queue names;
// it is implemented for Mem (membus_test.go) and AMQP (amqp_test.go) so
// both are held to the same semantics.
type harness struct {
	// newBus returns a bus closed when the test ends.
	newBus func(t *testing.T) Bus
	// queue returns a queue name unique to this test (removed afterwards
	// where the bus has server-side state).
	queue func(t *testing.T) string
	// retryDelay is the bus's configured Retry requeue delay.
	retryDelay time.Duration
}

type echoBody struct {
	N    int    `json:"n"`
	Text string `json:"text"`
}

func uniqueQueue(t *testing.T) string {
	return "test.bus." + uuid.NewString()[:8]
}

func mustMsg(t *testing.T, kind string, body any) Message {
	t.Helper()
	m, err := NewMessage(kind, body)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// recv waits for one message from ch.
func recv(t *testing.T, ch <-chan Message, within time.Duration) Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(within):
		t.Fatalf("no message within %s", within)
		return Message{}
	}
}

// none asserts ch stays empty for d.
func none(t *testing.T, ch <-chan Message, d time.Duration) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected delivery %s %s (redelivered=%v)", m.Kind, m.ID, m.Redelivered)
	case <-time.After(d):
	}
}

func runConformance(t *testing.T, h harness) {
	t.Run("PublishConsumeRoundTrip", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		got := make(chan Message, 4)
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			got <- m
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		sent := mustMsg(t, "echo", echoBody{N: 7, Text: "héllo"})
		if err := b.Publish(ctx, q, sent); err != nil {
			t.Fatal(err)
		}
		m := recv(t, got, 10*time.Second)
		if m.ID != sent.ID || m.Kind != sent.Kind || m.Redelivered {
			t.Fatalf("got %+v, want id %s kind %s not redelivered", m, sent.ID, sent.Kind)
		}
		var body echoBody
		if err := m.Decode(&body); err != nil {
			t.Fatal(err)
		}
		if body != (echoBody{N: 7, Text: "héllo"}) {
			t.Fatalf("body %+v", body)
		}
		none(t, got, 200*time.Millisecond)
	})

	t.Run("PublishBeforeConsumeIsKept", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		got := make(chan Message, 8)
		// A queue must exist for a publish to be routed; with RabbitMQ
		// the consumer declares it, so declare it by consuming briefly.
		cctx, stop := context.WithCancel(ctx)
		if err := b.Consume(cctx, q, func(_ context.Context, m Message) (any, error) {
			t.Errorf("first consumer got %s after it was stopped", m.ID)
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		stop()
		time.Sleep(200 * time.Millisecond) // let the cancel reach the broker
		var ids []string
		for i := range 3 {
			m := mustMsg(t, "echo", echoBody{N: i})
			ids = append(ids, m.ID)
			if err := b.Publish(ctx, q, m); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			got <- m
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for range ids {
			seen[recv(t, got, 10*time.Second).ID] = true
		}
		for _, id := range ids {
			if !seen[id] {
				t.Fatalf("message %s not delivered; got %v", id, seen)
			}
		}
	})

	t.Run("QueuesAreSeparate", func(t *testing.T) {
		b, q1, q2 := h.newBus(t), h.queue(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		got1, got2 := make(chan Message, 4), make(chan Message, 4)
		for q, ch := range map[string]chan Message{q1: got1, q2: got2} {
			if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
				ch <- m
				return nil, nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		m := mustMsg(t, "to-q2", nil)
		if err := b.Publish(ctx, q2, m); err != nil {
			t.Fatal(err)
		}
		if r := recv(t, got2, 10*time.Second); r.ID != m.ID {
			t.Fatalf("got %s", r.ID)
		}
		none(t, got1, 200*time.Millisecond)
	})

	t.Run("CallReply", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			var in echoBody
			if err := m.Decode(&in); err != nil {
				return nil, err
			}
			return echoBody{N: in.N * 2, Text: m.Kind}, nil
		}); err != nil {
			t.Fatal(err)
		}
		// Concurrent calls must each get their own reply.
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Go(func() {
				var out echoBody
				if err := b.Call(ctx, q, mustMsg(t, "double", echoBody{N: i}), &out); err != nil {
					t.Errorf("call %d: %v", i, err)
					return
				}
				if out != (echoBody{N: 2 * i, Text: "double"}) {
					t.Errorf("call %d: reply %+v", i, out)
				}
			})
		}
		wg.Wait()
		// A nil reply target just waits for completion.
		if err := b.Call(ctx, q, mustMsg(t, "double", echoBody{N: 1}), nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("CallTimeout", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			<-release
			return "late", nil
		}); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := b.Call(cctx, q, mustMsg(t, "slow", nil), nil)
		if !errors.Is(err, ErrTimeout) || !errdefs.IsUnavailable(err) {
			t.Fatalf("err = %v, want ErrTimeout (an Unavailable)", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("timeout took %s", d)
		}
	})

	t.Run("CallCanceled", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		if err := b.Consume(ctx, q, func(ctx context.Context, m Message) (any, error) {
			<-ctx.Done()
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(200*time.Millisecond, cancel)
		err := b.Call(cctx, q, mustMsg(t, "slow", nil), nil)
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})

	t.Run("HandlerErrorIsRemoteError", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			return nil, errors.New("no valid host found")
		}); err != nil {
			t.Fatal(err)
		}
		var out echoBody
		err := b.Call(ctx, q, mustMsg(t, "select", nil), &out)
		var re *RemoteError
		if !errors.As(err, &re) || re.Message != "no valid host found" {
			t.Fatalf("err = %#v, want RemoteError(no valid host found)", err)
		}
	})

	t.Run("HandlerErrorKeepsItsKind", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			switch m.Kind {
			case "missing":
				return nil, fmt.Errorf("diagnostics of i-1: %w", errdefs.NotFound("Instance i-1 could not be found.").
					WithCause(errors.New("docker: no such container")))
			case "taken":
				return nil, errdefs.Conflict("The IP address 10.0.0.5 is in use.").WithReason("IpAddressInUse")
			}
			return nil, errors.New("plain failure")
		}); err != nil {
			t.Fatal(err)
		}
		err := b.Call(ctx, q, mustMsg(t, "missing", nil), nil)
		if !errdefs.IsNotFound(err) || errdefs.IsConflict(err) {
			t.Fatalf("err = %#v, want a NotFound", err)
		}
		if got := errdefs.Message(err); got != "Instance i-1 could not be found." {
			t.Errorf("safe message %q", got)
		}
		var re *RemoteError
		if !errors.As(err, &re) || re.Message != "diagnostics of i-1: Instance i-1 could not be found.: docker: no such container" {
			t.Errorf("remote text = %#v", err)
		}
		err = b.Call(ctx, q, mustMsg(t, "taken", nil), nil)
		if !errdefs.IsConflict(err) || errdefs.Reason(err) != "IpAddressInUse" || errdefs.Message(err) != "The IP address 10.0.0.5 is in use." {
			t.Errorf("conflict: kind %q reason %q message %q", errdefs.KindOf(err), errdefs.Reason(err), errdefs.Message(err))
		}
		err = b.Call(ctx, q, mustMsg(t, "plain", nil), nil)
		if !errors.As(err, &re) || errdefs.KindOf(err) != "" || errdefs.Message(err) != "" {
			t.Errorf("plain error classified: %#v", err)
		}
	})

	t.Run("PanicIsRemoteErrorAndConsumerSurvives", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		var calls atomic.Int32
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			if calls.Add(1) == 1 {
				panic("boom")
			}
			return "fine", nil
		}); err != nil {
			t.Fatal(err)
		}
		var re *RemoteError
		if err := b.Call(ctx, q, mustMsg(t, "p", nil), nil); !errors.As(err, &re) {
			t.Fatalf("err = %v, want RemoteError", err)
		}
		var s string
		if err := b.Call(ctx, q, mustMsg(t, "p", nil), &s); err != nil || s != "fine" {
			t.Fatalf("second call: %q, %v", s, err)
		}
		if n := calls.Load(); n != 2 {
			t.Fatalf("handler ran %d times, want 2 (panicked message must not be redelivered)", n)
		}
	})

	t.Run("RetryRedelivers", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 30*time.Second)
		got := make(chan Message, 8)
		var n atomic.Int32
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			got <- m
			if n.Add(1) == 1 {
				return nil, Retry(errors.New("host busy"))
			}
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		sent := mustMsg(t, "retry-me", echoBody{N: 1})
		start := time.Now()
		if err := b.Publish(ctx, q, sent); err != nil {
			t.Fatal(err)
		}
		first := recv(t, got, 10*time.Second)
		second := recv(t, got, 10*time.Second+h.retryDelay)
		if first.ID != sent.ID || second.ID != sent.ID {
			t.Fatalf("ids %s %s, want %s", first.ID, second.ID, sent.ID)
		}
		if first.Redelivered || !second.Redelivered {
			t.Fatalf("redelivered flags %v %v, want false true", first.Redelivered, second.Redelivered)
		}
		if d := time.Since(start); d < h.retryDelay {
			t.Fatalf("redelivered after %s, before the retry delay %s", d, h.retryDelay)
		}
		none(t, got, 300*time.Millisecond)
	})

	t.Run("RetryOnCallEventuallyReplies", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 30*time.Second)
		var n atomic.Int32
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			if n.Add(1) == 1 {
				return nil, Retry(errors.New("not yet"))
			}
			return m.Redelivered, nil
		}); err != nil {
			t.Fatal(err)
		}
		var redelivered bool
		if err := b.Call(ctx, q, mustMsg(t, "c", nil), &redelivered); err != nil || !redelivered {
			t.Fatalf("call: redelivered=%v err=%v", redelivered, err)
		}
	})

	t.Run("ErrorDropsMessage", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		got := make(chan Message, 8)
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			got <- m
			return nil, errors.New("poison")
		}); err != nil {
			t.Fatal(err)
		}
		m := mustMsg(t, "poison", nil)
		if err := b.Publish(ctx, q, m); err != nil {
			t.Fatal(err)
		}
		recv(t, got, 10*time.Second)
		none(t, got, h.retryDelay+500*time.Millisecond)
	})

	t.Run("ConsumeStopsWithContext", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		cctx, stop := context.WithCancel(ctx)
		first := make(chan Message, 8)
		if err := b.Consume(cctx, q, func(_ context.Context, m Message) (any, error) {
			first <- m
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, q, mustMsg(t, "a", nil)); err != nil {
			t.Fatal(err)
		}
		recv(t, first, 10*time.Second)
		stop()
		time.Sleep(300 * time.Millisecond)
		m := mustMsg(t, "b", nil)
		if err := b.Publish(ctx, q, m); err != nil {
			t.Fatal(err)
		}
		none(t, first, 300*time.Millisecond)
		second := make(chan Message, 8)
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			second <- m
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		if r := recv(t, second, 10*time.Second); r.ID != m.ID {
			t.Fatalf("got %s want %s", r.ID, m.ID)
		}
	})

	t.Run("StoppingConsumerFinishesRunningHandler", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		cctx, stop := context.WithCancel(ctx)
		started, finished := make(chan Message, 1), make(chan struct{})
		if err := b.Consume(cctx, q, func(hctx context.Context, m Message) (any, error) {
			started <- m
			<-hctx.Done()
			time.Sleep(100 * time.Millisecond) // the work completes anyway
			close(finished)
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, q, mustMsg(t, "x", nil)); err != nil {
			t.Fatal(err)
		}
		recv(t, started, 10*time.Second)
		stop()
		<-finished
		// Success after the stop still acks: nobody gets it again.
		again := make(chan Message, 1)
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			again <- m
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		none(t, again, 500*time.Millisecond)
	})

	t.Run("StoppingConsumerRequeuesInterruptedWork", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		cctx, stop := context.WithCancel(ctx)
		started := make(chan Message, 1)
		if err := b.Consume(cctx, q, func(hctx context.Context, m Message) (any, error) {
			started <- m
			<-hctx.Done()
			return nil, hctx.Err() // not a Retry, but caused by the stop
		}); err != nil {
			t.Fatal(err)
		}
		m := mustMsg(t, "x", nil)
		if err := b.Publish(ctx, q, m); err != nil {
			t.Fatal(err)
		}
		recv(t, started, 10*time.Second)
		stop()
		again := make(chan Message, 1)
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			again <- m
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		if r := recv(t, again, 10*time.Second); r.ID != m.ID || !r.Redelivered {
			t.Fatalf("got %s redelivered=%v, want %s true", r.ID, r.Redelivered, m.ID)
		}
	})

	t.Run("PrefetchBoundsConcurrency", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 20*time.Second)
		var cur, peak atomic.Int32
		const n = 2 * DefaultPrefetch
		done := make(chan struct{}, n)
		if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
			c := cur.Add(1)
			for {
				p := peak.Load()
				if c <= p || peak.CompareAndSwap(p, c) {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
			cur.Add(-1)
			done <- struct{}{}
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if err := b.Publish(ctx, q, mustMsg(t, "w", echoBody{N: i})); err != nil {
				t.Fatal(err)
			}
		}
		for range n {
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatal("handlers did not finish")
			}
		}
		// Handlers run concurrently but bounded by the default prefetch.
		if p := peak.Load(); p < 2 || p > DefaultPrefetch {
			t.Fatalf("peak concurrency %d, want 2..%d", p, DefaultPrefetch)
		}
	})

	t.Run("PublishAfterClose", func(t *testing.T) {
		b, q := h.newBus(t), h.queue(t)
		ctx := testCtx(t, 5*time.Second)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, q, mustMsg(t, "x", nil)); err == nil {
			t.Fatal("publish on a closed bus succeeded")
		}
	})
}
