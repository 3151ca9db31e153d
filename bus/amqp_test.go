package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

const testRetryDelay = 300 * time.Millisecond

// amqpEnv tracks the buses and queues a test made so cleanup can close
// the buses before deleting the queues (a live consumer would otherwise
// re-declare a deleted queue when it resumes).
type amqpEnv struct {
	url    string
	mu     sync.Mutex
	buses  []*AMQP
	queues []string
}

func newAMQPEnv(t *testing.T) *amqpEnv {
	e := &amqpEnv{url: testenv.AMQPURL(t)}
	t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, b := range e.buses {
			b.Close()
		}
		if len(e.queues) == 0 {
			return
		}
		conn, err := amqp.Dial(e.url)
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
		for _, q := range e.queues {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Errorf("cleanup: delete queue %s: %v", q, err)
			}
		}
	})
	return e
}

func (e *amqpEnv) dial(t *testing.T, opts AMQPOptions) *AMQP {
	t.Helper()
	return e.dialURL(t, e.url, opts)
}

func (e *amqpEnv) dialURL(t *testing.T, u string, opts AMQPOptions) *AMQP {
	t.Helper()
	if opts.RetryDelay == 0 {
		opts.RetryDelay = testRetryDelay
	}
	if opts.ReconnectMin == 0 {
		opts.ReconnectMin = 50 * time.Millisecond
	}
	if opts.ReconnectMax == 0 {
		opts.ReconnectMax = 500 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b, err := DialAMQP(ctx, u, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.buses = append(e.buses, b)
	e.mu.Unlock()
	return b
}

func (e *amqpEnv) queue(t *testing.T) string {
	q := uniqueQueue(t)
	e.mu.Lock()
	e.queues = append(e.queues, q)
	e.mu.Unlock()
	return q
}

// amqpHarness runs the shared behavioural tests against RabbitMQ; each
// subtest gets its own env through the *testing.T it is called with.
func amqpHarness() harness {
	var mu sync.Mutex
	envs := map[*testing.T]*amqpEnv{}
	env := func(t *testing.T) *amqpEnv {
		mu.Lock()
		defer mu.Unlock()
		e, ok := envs[t]
		if !ok {
			e = newAMQPEnv(t)
			envs[t] = e
			t.Cleanup(func() {
				mu.Lock()
				delete(envs, t)
				mu.Unlock()
			})
		}
		return e
	}
	return harness{
		newBus:     func(t *testing.T) Bus { return env(t).dial(t, AMQPOptions{}) },
		queue:      func(t *testing.T) string { return env(t).queue(t) },
		retryDelay: testRetryDelay,
	}
}

func TestAMQPConformance(t *testing.T) {
	testenv.AMQPURL(t)
	t.Parallel()
	runConformance(t, amqpHarness())
}

// rawChannel opens a plain channel for inspecting the broker directly.
func rawChannel(t *testing.T, u string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// The wire format other tools (and future non-Go agents) see: a
// persistent JSON message on the capsule exchange, routed by queue name,
// with the kind and id in the properties.
func TestAMQPPublishProperties(t *testing.T) {
	t.Parallel()
	e := newAMQPEnv(t)
	q := e.queue(t)
	b := e.dial(t, AMQPOptions{Declare: []string{q}})
	ctx := testCtx(t, 20*time.Second)
	m := mustMsg(t, "build_instance", echoBody{N: 3, Text: "x"})
	if err := b.Publish(ctx, q, m); err != nil {
		t.Fatal(err)
	}
	ch := rawChannel(t, e.url)
	d, ok, err := ch.Get(q, true)
	if err != nil || !ok {
		t.Fatalf("get: ok=%v err=%v", ok, err)
	}
	if d.DeliveryMode != amqp.Persistent || d.ContentType != "application/json" ||
		d.MessageId != m.ID || d.Type != "build_instance" || d.Exchange != "capsule" || d.RoutingKey != q {
		t.Fatalf("properties: mode=%d ct=%q id=%q type=%q exchange=%q key=%q",
			d.DeliveryMode, d.ContentType, d.MessageId, d.Type, d.Exchange, d.RoutingKey)
	}
	var body echoBody
	if err := json.Unmarshal(d.Body, &body); err != nil || body != (echoBody{N: 3, Text: "x"}) {
		t.Fatalf("body %s: %v", d.Body, err)
	}
	// The queue itself is durable and bound to the exchange.
	if _, err := ch.QueueDeclarePassive(q, true, false, false, false, nil); err != nil {
		t.Fatalf("queue not durable/present: %v", err)
	}
}

func TestAMQPUnroutablePublishFails(t *testing.T) {
	t.Parallel()
	e := newAMQPEnv(t)
	b := e.dial(t, AMQPOptions{})
	ctx := testCtx(t, 10*time.Second)
	err := b.Publish(ctx, "test.bus.nobody-"+newID()[:8], mustMsg(t, "lost", nil))
	if err == nil || !strings.Contains(err.Error(), "unroutable") {
		t.Fatalf("err = %v, want unroutable", err)
	}
	// The bus stays usable after a returned message.
	q := e.queue(t)
	if err := b.Consume(ctx, q, func(context.Context, Message) (any, error) { return "ok", nil }); err != nil {
		t.Fatal(err)
	}
	var s string
	if err := b.Call(ctx, q, mustMsg(t, "x", nil), &s); err != nil || s != "ok" {
		t.Fatalf("call after return: %q %v", s, err)
	}
}

func TestAMQPBadCredentialsFailFast(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testenv.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("capsule-nobody", "wrong")
	ctx := testCtx(t, 20*time.Second)
	start := time.Now()
	if _, err := DialAMQP(ctx, u.String(), AMQPOptions{}); err == nil {
		t.Fatal("dial with bad credentials succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("bad credentials took %s to fail", d)
	}
}

// A message whose consumer's connection died before the ack goes to the
// next consumer, flagged as redelivered.
func TestAMQPUnackedMessageRedeliveredToNewConsumer(t *testing.T) {
	t.Parallel()
	e := newAMQPEnv(t)
	q := e.queue(t)
	ctx := testCtx(t, 30*time.Second)
	first := e.dial(t, AMQPOptions{})
	started := make(chan Message, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	if err := first.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
		started <- m
		<-release // stuck: never acks before its connection dies
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	m := mustMsg(t, "build_instance", echoBody{N: 1})
	if err := first.Publish(ctx, q, m); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, started, 10*time.Second); got.ID != m.ID || got.Redelivered {
		t.Fatalf("first delivery %+v", got)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := e.dial(t, AMQPOptions{})
	got := make(chan Message, 4)
	if err := second.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
		got <- m
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	r := recv(t, got, 10*time.Second)
	if r.ID != m.ID || !r.Redelivered {
		t.Fatalf("second delivery id=%s redelivered=%v, want %s true", r.ID, r.Redelivered, m.ID)
	}
	var body echoBody
	if err := r.Decode(&body); err != nil || body.N != 1 {
		t.Fatalf("body %+v %v", body, err)
	}
}

// checkWorks asserts publish/consume and Call work on b over queue q.
func checkWorks(t *testing.T, ctx context.Context, b *AMQP, q string, got <-chan Message) {
	t.Helper()
	m := mustMsg(t, "after", nil)
	if err := b.Publish(ctx, q, m); err != nil {
		t.Fatalf("publish: %v", err)
	}
	for {
		r := recv(t, got, 15*time.Second)
		if r.ID == m.ID {
			break
		}
	}
	var s string
	if err := b.Call(ctx, q, mustMsg(t, "call", nil), &s); err != nil || s != "pong" {
		t.Fatalf("call: %q %v", s, err)
	}
}

func consumeInto(t *testing.T, ctx context.Context, b *AMQP, q string) <-chan Message {
	t.Helper()
	got := make(chan Message, 64)
	if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
		if m.Kind == "call" {
			return "pong", nil
		}
		got <- m
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// A network failure under the bus: it reconnects, consumers resume and
// publishing works again.
func TestAMQPReconnectAfterNetworkFailure(t *testing.T) {
	t.Parallel()
	e := newAMQPEnv(t)
	q := e.queue(t)
	b := e.dial(t, AMQPOptions{})
	ctx := testCtx(t, 60*time.Second)
	got := consumeInto(t, ctx, b, q)
	checkWorks(t, ctx, b, q, got)
	for i := range 2 {
		if !b.dropConnection() {
			t.Fatalf("drop %d: no connection", i)
		}
		checkWorks(t, ctx, b, q, got)
	}
}

// The broker closes the connection (as on a broker restart or an
// operator's close_connection): the bus reconnects.
func TestAMQPReconnectAfterBrokerClose(t *testing.T) {
	t.Parallel()
	ctl, err := exec.LookPath("rabbitmqctl")
	testenv.Require(t, err == nil, "rabbitmqctl not available: %v", err)
	e := newAMQPEnv(t)
	q := e.queue(t)
	name := "capsule-bus-test-" + newID()[:8]
	b := e.dial(t, AMQPOptions{Name: name})
	ctx := testCtx(t, 90*time.Second)
	got := consumeInto(t, ctx, b, q)
	checkWorks(t, ctx, b, q, got)

	b.mu.Lock()
	conn := b.sess.conn
	b.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// close_connection wants the connection's Erlang pid: find it by the
	// unique connection name the bus advertised.
	out, err := exec.CommandContext(cctx, ctl, "list_connections", "-q", "--no-table-headers", "pid", "client_properties").CombinedOutput()
	if err != nil {
		t.Skipf("rabbitmqctl list_connections: %v: %s", err, out)
	}
	var pid string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, name) {
			pid, _, _ = strings.Cut(line, "\t")
		}
	}
	if pid == "" {
		t.Fatalf("connection %s not listed by rabbitmqctl:\n%s", name, out)
	}
	if out, err := exec.CommandContext(cctx, ctl, "close_connection", pid, "capsule bus test").CombinedOutput(); err != nil {
		t.Fatalf("rabbitmqctl close_connection %s: %v: %s", pid, err, out)
	}
	// The close is asynchronous on the broker side: wait until it took.
	deadline := time.Now().Add(20 * time.Second)
	for !conn.IsClosed() {
		if time.Now().After(deadline) {
			t.Fatal("broker did not close the connection")
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkWorks(t, ctx, b, q, got)
}

// cutProxy is a TCP proxy in front of RabbitMQ that can simulate an
// outage: cut drops every connection and refuses new ones until restore.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		p.cut()
	})
	go p.serve()
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { io.Copy(u, c); u.Close(); c.Close() }()
		go func() { io.Copy(c, u); u.Close(); c.Close() }()
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// During an outage Publish and Call wait for the reconnect instead of
// failing; consumers resume once the broker is back.
func TestAMQPPublishWaitsThroughOutage(t *testing.T) {
	t.Parallel()
	e := newAMQPEnv(t)
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	q := e.queue(t)
	b := e.dialURL(t, u.String(), AMQPOptions{})
	ctx := testCtx(t, 60*time.Second)
	got := consumeInto(t, ctx, b, q)
	checkWorks(t, ctx, b, q, got)

	proxy.cut()
	// Wait until the bus noticed, so the publish below really happens
	// during the outage.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		s := b.sess
		b.mu.Unlock()
		if s == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bus did not notice the outage")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A publish with a short deadline fails during the outage...
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = b.Publish(sctx, q, mustMsg(t, "short", nil))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish during outage: %v, want deadline exceeded", err)
	}
	// ...and a Call times out with ErrTimeout.
	sctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	err = b.Call(sctx, q, mustMsg(t, "call", nil), nil)
	cancel()
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("call during outage: %v, want ErrTimeout", err)
	}

	// A patient publish and call complete once the broker is back.
	m := mustMsg(t, "patient", nil)
	pubErr := make(chan error, 1)
	go func() { pubErr <- b.Publish(ctx, q, m) }()
	callErr := make(chan error, 1)
	go func() {
		var s string
		err := b.Call(ctx, q, mustMsg(t, "call", nil), &s)
		if err == nil && s != "pong" {
			err = fmt.Errorf("reply %q", s)
		}
		callErr <- err
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-pubErr:
		t.Fatalf("publish returned during the outage: %v", err)
	default:
	}
	proxy.restore()
	if err := <-pubErr; err != nil {
		t.Fatalf("publish after restore: %v", err)
	}
	if err := <-callErr; err != nil {
		t.Fatalf("call after restore: %v", err)
	}
	for {
		if r := recv(t, got, 15*time.Second); r.ID == m.ID {
			break
		}
	}
	checkWorks(t, ctx, b, q, got)
}

// A Call whose connection drops while the handler works is sent again
// on the new connection and still gets its reply.
func TestAMQPCallSurvivesReconnect(t *testing.T) {
	t.Parallel()
	e := newAMQPEnv(t)
	q := e.queue(t)
	server := e.dial(t, AMQPOptions{})
	client := e.dial(t, AMQPOptions{})
	ctx := testCtx(t, 60*time.Second)
	var mu sync.Mutex
	calls := 0
	inHandler := make(chan struct{}, 4)
	if err := server.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		inHandler <- struct{}{}
		if n == 1 {
			time.Sleep(500 * time.Millisecond) // the client's connection drops meanwhile
		}
		return n, nil
	}); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	var n int
	go func() { res <- client.Call(ctx, q, mustMsg(t, "slow", nil), &n) }()
	select {
	case <-inHandler:
	case <-time.After(10 * time.Second):
		t.Fatal("handler not reached")
	}
	client.dropConnection()
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("reply from execution %d, want the resent call's (2)", n)
	}
}

// A handler still working when the connection drops must not hold the
// consumer back: it resumes on the new connection at once, and the
// interrupted message (its ack lost) comes again, flagged redelivered.
func TestAMQPConsumerResumesWhileHandlerRuns(t *testing.T) {
	t.Parallel()
	e := newAMQPEnv(t)
	q := e.queue(t)
	b := e.dial(t, AMQPOptions{})
	ctx := testCtx(t, 60*time.Second)
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	got := make(chan Message, 16)
	if err := b.Consume(ctx, q, func(_ context.Context, m Message) (any, error) {
		got <- m
		if m.Kind == "slow" && !m.Redelivered {
			<-release
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	slow := mustMsg(t, "slow", nil)
	if err := b.Publish(ctx, q, slow); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, got, 10*time.Second); r.ID != slow.ID {
		t.Fatalf("got %s", r.ID)
	}
	b.dropConnection()
	fast := mustMsg(t, "fast", nil)
	if err := b.Publish(ctx, q, fast); err != nil {
		t.Fatal(err)
	}
	seen := map[string]Message{}
	for len(seen) < 2 {
		r := recv(t, got, 15*time.Second)
		seen[r.ID] = r
	}
	if r, ok := seen[slow.ID]; !ok || !r.Redelivered {
		t.Fatalf("slow message not redelivered: %+v", seen)
	}
	if _, ok := seen[fast.ID]; !ok {
		t.Fatalf("fast message not delivered while the slow handler ran: %+v", seen)
	}
	once.Do(func() { close(release) })
}

// A publish the broker refuses (basic.nack; here a full queue with
// x-overflow=reject-publish) is not an error: it is published again on a
// fresh channel, with backoff, until the broker takes it or ctx ends.
func TestAMQPNackedPublishRetriedOnFreshChannel(t *testing.T) {
	t.Parallel()
	e := newAMQPEnv(t)
	b := e.dial(t, AMQPOptions{})
	q := e.queue(t)
	ch := rawChannel(t, e.url)
	if _, err := ch.QueueDeclare(q, true, false, false, false,
		amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, q, exchangeName, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 30*time.Second)
	first, second := mustMsg(t, "first", nil), mustMsg(t, "second", nil)
	if err := b.Publish(ctx, q, first); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	pubBefore := b.sess.pub
	b.mu.Unlock()

	// The queue is full: the broker nacks the second message, and a
	// publish with a short deadline fails with that deadline.
	// (2 s: the nack must come back before it, which took over 400 ms
	// on a loaded CI machine.)
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := b.Publish(sctx, q, second)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "nack") {
		t.Fatalf("publish to a full queue: %v, want the nack and the deadline", err)
	}
	b.mu.Lock()
	pubAfter := b.sess.pub
	b.mu.Unlock()
	if pubAfter == pubBefore {
		t.Errorf("the publish channel that got a nack is still in use")
	}

	// A patient publish waits; once the queue has room it goes through.
	pubErr := make(chan error, 1)
	go func() { pubErr <- b.Publish(ctx, q, second) }()
	time.Sleep(time.Second)
	select {
	case err := <-pubErr:
		t.Fatalf("publish to a full queue returned: %v", err)
	default:
	}
	d, ok, err := ch.Get(q, true)
	if err != nil || !ok || d.MessageId != first.ID {
		t.Fatalf("get first: ok=%v id=%q err=%v", ok, d.MessageId, err)
	}
	if err := <-pubErr; err != nil {
		t.Fatalf("publish once the queue had room: %v", err)
	}
	d, ok, err = ch.Get(q, true)
	if err != nil || !ok || d.MessageId != second.ID {
		t.Fatalf("get second: ok=%v id=%q err=%v", ok, d.MessageId, err)
	}
	// The bus still works as before on its fresh channel.
	q2 := e.queue(t)
	checkWorks(t, ctx, b, q2, consumeInto(t, ctx, b, q2))
}
