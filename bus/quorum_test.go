package bus

import (
	"context"
	"errors"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

// ownVhost creates a RabbitMQ vhost for the test (deleted at cleanup) and
// returns the test broker's URL on it: the work queues of another type
// than the shared vhost's ("scheduler", "conductor") need their own.
func ownVhost(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(testenv.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	vhost := "capsule-bus-" + uuid.NewString()[:8]
	for _, args := range [][]string{{"add_vhost", vhost}, {"set_permissions", "-p", vhost, u.User.Username(), ".*", ".*", ".*"}} {
		if out, err := exec.Command("rabbitmqctl", args...).CombinedOutput(); err != nil {
			t.Skipf("rabbitmqctl %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("rabbitmqctl", "delete_vhost", vhost).Run() })
	u.Path = "/" + vhost
	return u.String()
}

// isQuorum reports whether queue is a quorum queue: declaring it again as
// a classic one fails with PRECONDITION_FAILED.
func isQuorum(t *testing.T, u, queue string) bool {
	t.Helper()
	ch := rawChannel(t, u)
	_, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": QueueClassic})
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
		return true
	}
	if err != nil {
		t.Fatalf("redeclare %s: %v", queue, err)
	}
	return false
}

// TestAMQPQuorumQueues: with QueueType quorum the work queues (the
// always-declared ones and a consumer's) are quorum queues and carry
// messages and Calls as classic ones do; a bus of the other type on the
// same vhost says which queue disagrees and what to do.
func TestAMQPQuorumQueues(t *testing.T) {
	t.Parallel()
	u := ownVhost(t)
	e := &amqpEnv{url: u}
	b := e.dialURL(t, u, AMQPOptions{QueueType: QueueQuorum})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := ComputeQueue("h-" + uuid.NewString()[:6])
	got := make(chan Message, 1)
	if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
		if m.Kind == "call" {
			return map[string]string{"pong": m.ID}, nil
		}
		got <- m
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	// The consumer declares its queue asynchronously: wait for it.
	m := mustMsg(t, "cast", map[string]int{"n": 1})
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := b.Publish(ctx, q, m)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish to the quorum queue: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case r := <-got:
		if r.ID != m.ID {
			t.Errorf("got message %s, want %s", r.ID, m.ID)
		}
	case <-ctx.Done():
		t.Fatal("message on a quorum queue not delivered")
	}
	var reply map[string]string
	call := mustMsg(t, "call", nil)
	if err := b.Call(ctx, q, call, &reply); err != nil || reply["pong"] != call.ID {
		t.Errorf("call over a quorum queue: %v %v", reply, err)
	}
	for _, name := range []string{SchedulerQueue, ConductorQueue, q} {
		if !isQuorum(t, u, name) {
			t.Errorf("queue %s is not a quorum queue", name)
		}
	}
	// A classic bus on the same vhost cannot use the quorum queues: it
	// fails at once (a configuration error) and says which queue and why.
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	start := time.Now()
	_, err := DialAMQP(dctx, u, AMQPOptions{QueueType: QueueClassic})
	if err == nil {
		t.Fatal("a classic bus declared quorum queues")
	}
	if !strings.Contains(err.Error(), "queue_type") || time.Since(start) > 5*time.Second {
		t.Errorf("after %s: %v", time.Since(start), err)
	}
	if _, err := DialAMQP(context.Background(), u, AMQPOptions{QueueType: "mirrored"}); err == nil {
		t.Error("an unknown queue type was accepted")
	}
}

// TestAMQPQueueTypeCost measures publishing with confirms to a classic
// and a quorum queue on the test broker (logged, not asserted: it is the
// figure docs/operations.md quotes for choosing bus.queue_type).
func TestAMQPQueueTypeCost(t *testing.T) {
	u := ownVhost(t)
	const n = 300
	for _, typ := range []string{QueueClassic, QueueQuorum} {
		e := &amqpEnv{url: u}
		b := e.dialURL(t, u, AMQPOptions{QueueType: typ, Declare: []string{"cost." + typ}})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		start := time.Now()
		for i := range n {
			if err := b.Publish(ctx, "cost."+typ, mustMsg(t, "cost", i)); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%s: %d publishes with confirms, %s each", typ, n, (time.Since(start) / n).Round(time.Microsecond))
		cancel()
		b.Close()
		// The always-declared queues are of one type per vhost.
		ch := rawChannel(t, u)
		for _, q := range []string{SchedulerQueue, ConductorQueue} {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Fatal(err)
			}
		}
	}
}
