package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// redirectBus sends what the agent addresses to the conductor to a
// private queue, so a test on the shared broker never takes messages
// from (or gives them to) a real conductor or another test.
type redirectBus struct {
	bus.Bus
	conductorQueue string
}

func (r redirectBus) q(queue string) string {
	if queue == bus.ConductorQueue {
		return r.conductorQueue
	}
	return queue
}

func (r redirectBus) Publish(ctx context.Context, queue string, m bus.Message) error {
	return r.Bus.Publish(ctx, r.q(queue), m)
}

func (r redirectBus) Call(ctx context.Context, queue string, m bus.Message, reply any) error {
	return r.Bus.Call(ctx, r.q(queue), m, reply)
}

func (r redirectBus) Consume(ctx context.Context, queue string, h bus.Handler) error {
	return r.Bus.Consume(ctx, r.q(queue), h)
}

// TestAgentOverRabbitMQ runs the agent on the real broker: build, an
// action, console output (a Call answered by the agent) and a graceful
// stop, with the conductor stand-in on a private queue.
func TestAgentOverRabbitMQ(t *testing.T) {
	url := testenv.AMQPURL(t)
	suffix := uuid.NewString()[:8]
	host := "agtest-" + suffix
	condQueue := "test.agent.conductor." + suffix
	computeQueue := bus.ComputeQueue(host)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := bus.DialAMQP(ctx, url, bus.AMQPOptions{RetryDelay: 200 * time.Millisecond, Name: "agent-test-" + suffix,
		Declare: []string{condQueue}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		conn, err := amqp.Dial(url)
		if err != nil {
			t.Errorf("cleanup: dial: %v", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Errorf("cleanup: channel: %v", err)
			return
		}
		for _, q := range []string{condQueue, computeQueue} {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Errorf("cleanup: delete queue %s: %v", q, err)
			}
		}
	})
	rb := redirectBus{Bus: b, conductorQueue: condQueue}

	cond := &conductor{host: host}
	cctx, stopCond := context.WithCancel(ctx)
	defer stopCond()
	if err := rb.Consume(cctx, bus.ConductorQueue, cond.handle); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig()
	cfg.Host = host
	cfg.HeartbeatInterval = 200 * time.Millisecond
	drv := newFakeDriver()
	a := New(cfg, drv, rb, testLogger(t), WithReconcileInterval(0))
	actx, stopAgent := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	defer func() {
		stopAgent()
		<-done
	}()
	waitFor(t, 15*time.Second, "the start-up power sync", func() bool { return len(cond.powerSyncs()) > 0 })
	waitFor(t, 15*time.Second, "two heartbeats", func() bool { return len(cond.hostReports()) >= 2 })
	if h := cond.hostReports()[0]; h.Host != host || h.VCPUs != 8 {
		t.Errorf("heartbeat = %+v", h)
	}

	publish := func(kind string, body any) {
		t.Helper()
		m, err := bus.NewMessage(kind, body)
		if err != nil {
			t.Fatal(err)
		}
		if err := rb.Publish(ctx, computeQueue, m); err != nil {
			t.Fatal(err)
		}
	}
	id := "i-amqp-" + suffix
	publish(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: "req-1", Attempt: 1,
		Spec: protocol.InstanceSpec{ID: id, Name: "amqp", ProjectID: "p", ImageRef: fakeImage, VCPUs: 1, MemoryMB: 64}})
	waitFor(t, 15*time.Second, "the build report", func() bool { return len(cond.reportsFor(id)) >= 1 })
	if r := cond.reportsFor(id)[0]; !r.OK || r.PowerState != int(drivers.PowerRunning) || r.Host != host {
		t.Fatalf("build report = %+v", r)
	}

	m, err := bus.NewMessage(protocol.KindConsoleOutput, protocol.ConsoleOutputRequest{InstanceID: id, Lines: -1})
	if err != nil {
		t.Fatal(err)
	}
	var out protocol.ConsoleOutputReply
	if err := rb.Call(ctx, computeQueue, m, &out); err != nil || !strings.Contains(out.Output, "capsule-init: ready") {
		t.Fatalf("console output = %q, %v", out.Output, err)
	}

	// A stop in flight when the agent is told to stop still completes and
	// reports before Run returns.
	release := make(chan struct{})
	stopping := make(chan struct{})
	drv.setHook(func(op, _ string) {
		if op == "stop" {
			close(stopping)
			<-release
		}
	})
	publish(protocol.KindInstanceAction, protocol.InstanceAction{RequestID: "req-2", InstanceID: id, Action: lifecycle.ActStop})
	select {
	case <-stopping:
	case <-time.After(15 * time.Second):
		t.Fatal("the stop never reached the driver")
	}
	stopAgent()
	time.AfterFunc(100*time.Millisecond, func() { close(release) })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
		done <- nil // for the deferred wait
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	waitFor(t, 15*time.Second, "the stop report", func() bool { return len(cond.reportsFor(id)) >= 2 })
	if r := cond.reportsFor(id)[1]; !r.OK || r.Action != lifecycle.ActStop || r.PowerState != int(drivers.PowerShutdown) {
		t.Fatalf("stop report = %+v", r)
	}
}
