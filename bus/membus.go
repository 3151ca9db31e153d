package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// Mem is an in-process Bus for unit tests. It keeps the semantics the
// roles rely on from RabbitMQ — queues exist on first publish or consume,
// messages wait in a queue until a consumer takes them, a Retry error
// requeues the message (redelivered) after a delay, any other error drops
// it, Call waits for the reply — without a broker. Messages are JSON
// round-tripped like on the wire so tests catch encoding mistakes.
//
// Beyond Bus it lets tests look inside: Sent lists what was published to
// a queue, Pending what waits in it, and WaitIdle blocks until every
// consumed queue is drained and no handler runs.
type Mem struct {
	retryDelay time.Duration
	prefetch   int
	log        *slog.Logger
	noHistory  bool // Sent is not kept (a long-running user, not a test)

	// life ends on Close, stopping consumers like the Consume ctx does.
	life context.Context
	stop context.CancelFunc

	sender string // stamped on every message published through m

	mu      sync.Mutex
	closed  bool
	queues  map[string]*memQueue
	retries int // requeues waiting for their delay
	running int // handlers running, including those of consumers gone since
	// changed is closed and replaced on every state change so WaitIdle
	// can sleep instead of polling.
	changed chan struct{}
}

// MemOption configures a Mem.
type MemOption func(*Mem)

// MemRetryDelay sets how long a Retry-marked message waits before it is
// requeued (default 10ms: Mem is for tests, which should not sleep
// RetryDelay).
func MemRetryDelay(d time.Duration) MemOption { return func(m *Mem) { m.retryDelay = d } }

// MemPrefetch sets how many messages one consumer handles at once
// (default DefaultPrefetch, like AMQPOptions).
func MemPrefetch(n int) MemOption { return func(m *Mem) { m.prefetch = n } }

// MemNoHistory stops Mem from keeping every message for Sent: a process
// that runs long on a Mem (the in-process fuzzing cloud) would otherwise
// grow with every message.
func MemNoHistory() MemOption { return func(m *Mem) { m.noHistory = true } }

// MemLogger sets the logger for dropped handler errors (default slog.Default()).
func MemLogger(l *slog.Logger) MemOption { return func(m *Mem) { m.log = l } }

type memQueue struct {
	pending   []memDelivery
	sent      []Message
	consumers []*memConsumer
	next      int // round-robin position in consumers
}

type memConsumer struct {
	ctx      context.Context
	h        Handler
	inflight int
}

type memDelivery struct {
	msg   Message
	reply chan memReply // nil unless the message is a Call
}

type memReply struct {
	body json.RawMessage
	err  *wireError // nil: the handler succeeded
}

// MemSender is the Sender of the messages published through a Mem (a
// control-plane user); MemAs gives another.
const MemSender = "capsule"

// NewMem returns an empty in-process bus.
func NewMem(opts ...MemOption) *Mem {
	m := &Mem{
		sender:     MemSender,
		retryDelay: 10 * time.Millisecond,
		prefetch:   DefaultPrefetch,
		log:        slog.Default(),
		queues:     map[string]*memQueue{},
		changed:    make(chan struct{}),
	}
	for _, o := range opts {
		o(m)
	}
	m.life, m.stop = context.WithCancel(context.Background())
	if m.prefetch < 1 {
		m.prefetch = 1
	}
	return m
}

var _ Bus = (*Mem)(nil)

// errClosed is returned by operations on a closed bus.
var errClosed = errors.New("bus: closed")

// Publish implements Bus.
func (m *Mem) Publish(ctx context.Context, queue string, msg Message) error {
	return m.publishAs(ctx, m.sender, queue, msg)
}

func (m *Mem) publishAs(ctx context.Context, sender, queue string, msg Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bus: publish %s to %s: %w", msg.Kind, queue, err)
	}
	msg.Sender = sender
	return m.enqueue(queue, msg, nil)
}

// Call implements Bus.
func (m *Mem) Call(ctx context.Context, queue string, msg Message, reply any) error {
	return m.callAs(ctx, m.sender, queue, msg, reply)
}

func (m *Mem) callAs(ctx context.Context, sender, queue string, msg Message, reply any) error {
	if err := ctx.Err(); err != nil {
		return callCtxErr(queue, msg, err)
	}
	ch := make(chan memReply, 1)
	msg.Sender = sender
	if err := m.enqueue(queue, msg, ch); err != nil {
		return err
	}
	select {
	case r := <-ch:
		return decodeReply(queue, msg, r.err, r.body, reply)
	case <-ctx.Done():
		return callCtxErr(queue, msg, ctx.Err())
	}
}

// callCtxErr maps the end of a Call's context to ErrTimeout when the
// deadline passed (the caller's deadline is the reply timeout).
func callCtxErr(queue string, m Message, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("bus: call %s %s on %s: %w", m.Kind, m.ID, queue, ErrTimeout)
	}
	return fmt.Errorf("bus: call %s %s on %s: %w", m.Kind, m.ID, queue, err)
}

// decodeReply turns a received reply into Call's result.
func decodeReply(queue string, m Message, werr *wireError, body []byte, reply any) error {
	if werr != nil {
		return werr.remote()
	}
	if reply == nil {
		return nil
	}
	if err := json.Unmarshal(body, reply); err != nil {
		return fmt.Errorf("bus: decode reply to %s %s from %s: %w", m.Kind, m.ID, queue, err)
	}
	return nil
}

// Consume implements Bus.
func (m *Mem) Consume(ctx context.Context, queue string, h Handler) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("bus: consume %s: %w", queue, errClosed)
	}
	q := m.queue(queue)
	cctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(m.life, cancel)
	c := &memConsumer{ctx: cctx, h: h}
	q.consumers = append(q.consumers, c)
	go func() {
		<-cctx.Done()
		stopOnClose()
		m.mu.Lock()
		defer m.mu.Unlock()
		q.consumers = slices.DeleteFunc(q.consumers, func(x *memConsumer) bool { return x == c })
		m.notify()
	}()
	m.dispatch(q)
	return nil
}

// Close implements Bus: consumers stop taking messages and their
// contexts end; handlers already running finish.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for _, q := range m.queues {
		q.consumers = nil
	}
	m.stop()
	m.notify()
	return nil
}

// As returns a Bus over m whose messages carry sender as their Sender, as
// if its user had logged in to the broker as sender (a compute host's own
// user, say).
func (m *Mem) As(sender string) Bus { return memAs{m: m, sender: sender} }

type memAs struct {
	m      *Mem
	sender string
}

func (a memAs) Publish(ctx context.Context, queue string, msg Message) error {
	return a.m.publishAs(ctx, a.sender, queue, msg)
}

func (a memAs) Call(ctx context.Context, queue string, msg Message, reply any) error {
	return a.m.callAs(ctx, a.sender, queue, msg, reply)
}

func (a memAs) Consume(ctx context.Context, queue string, h Handler) error {
	return a.m.Consume(ctx, queue, h)
}
func (a memAs) Close() error { return a.m.Close() }

// Sent returns every message published (or Called) to queue, in order,
// whether or not it was consumed yet.
func (m *Mem) Sent(queue string) []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	if q, ok := m.queues[queue]; ok {
		return slices.Clone(q.sent)
	}
	return nil
}

// Pending returns the messages waiting in queue for a consumer.
func (m *Mem) Pending(queue string) []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	q, ok := m.queues[queue]
	if !ok {
		return nil
	}
	out := make([]Message, len(q.pending))
	for i, d := range q.pending {
		out[i] = d.msg
	}
	return out
}

// WaitIdle blocks until no handler runs, no retry waits for its delay and
// every queue that has a consumer is empty, or ctx ends. Messages in
// queues nobody consumes do not count: they stay for Pending to inspect.
func (m *Mem) WaitIdle(ctx context.Context) error {
	for {
		m.mu.Lock()
		idle := m.idle()
		changed := m.changed
		m.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("bus: wait for idle: %w", ctx.Err())
		}
	}
}

func (m *Mem) idle() bool {
	if m.retries > 0 || m.running > 0 {
		return false
	}
	for _, q := range m.queues {
		if len(q.consumers) > 0 && len(q.pending) > 0 {
			return false
		}
	}
	return true
}

func (m *Mem) enqueue(queue string, msg Message, reply chan memReply) error {
	msg = cloneMessage(msg)
	msg.Redelivered = false
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("bus: publish %s to %s: %w", msg.Kind, queue, errClosed)
	}
	q := m.queue(queue)
	if !m.noHistory {
		q.sent = append(q.sent, msg)
	}
	q.pending = append(q.pending, memDelivery{msg: msg, reply: reply})
	m.dispatch(q)
	m.notify()
	return nil
}

// queue returns the named queue, creating it. m.mu must be held.
func (m *Mem) queue(name string) *memQueue {
	q, ok := m.queues[name]
	if !ok {
		q = &memQueue{}
		m.queues[name] = q
	}
	return q
}

// notify wakes WaitIdle. m.mu must be held.
func (m *Mem) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// dispatch hands pending messages to consumers with spare capacity,
// round-robin. m.mu must be held.
func (m *Mem) dispatch(q *memQueue) {
	for len(q.pending) > 0 {
		c := m.pick(q)
		if c == nil {
			return
		}
		d := q.pending[0]
		q.pending = q.pending[1:]
		c.inflight++
		m.running++
		go m.handle(q, c, d)
	}
}

func (m *Mem) pick(q *memQueue) *memConsumer {
	for i := range q.consumers {
		c := q.consumers[(q.next+i)%len(q.consumers)]
		if c.inflight < m.prefetch && c.ctx.Err() == nil {
			q.next = (q.next + i + 1) % len(q.consumers)
			return c
		}
	}
	return nil
}

func (m *Mem) handle(q *memQueue, c *memConsumer, d memDelivery) {
	reply, err := runHandler(c.ctx, c.h, cloneMessage(d.msg))
	var body []byte
	if err == nil && d.reply != nil {
		var merr error
		if body, merr = json.Marshal(reply); merr != nil {
			err = fmt.Errorf("bus: encode reply to %s %s: %w", d.msg.Kind, d.msg.ID, merr)
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	c.inflight--
	m.running--
	switch {
	case err != nil && c.ctx.Err() != nil:
		// Stopping: the error is likely the cancellation itself, so the
		// message goes back for another consumer, as with RabbitMQ.
		d.msg.Redelivered = true
		q.pending = append([]memDelivery{d}, q.pending...)
	case err != nil && IsRetry(err):
		m.log.Info("bus: handler asked for a retry", "queue", queueName(m, q), "kind", d.msg.Kind, "id", d.msg.ID, "err", err)
		m.retries++
		time.AfterFunc(m.retryDelay, func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.retries--
			d.msg.Redelivered = true
			// RabbitMQ puts a requeued message back near the head.
			q.pending = append([]memDelivery{d}, q.pending...)
			m.dispatch(q)
			m.notify()
		})
	case err != nil:
		if !IsRetry(err) {
			m.log.Warn("bus: handler failed; message dropped", "queue", queueName(m, q), "kind", d.msg.Kind, "id", d.msg.ID, "err", err)
		}
		if d.reply != nil {
			d.reply <- memReply{err: toWire(err)}
		}
	case d.reply != nil:
		d.reply <- memReply{body: body}
	}
	m.dispatch(q)
	m.notify()
}

// queueName finds q's name for logs. m.mu must be held.
func queueName(m *Mem, q *memQueue) string {
	for n, x := range m.queues {
		if x == q {
			return n
		}
	}
	return ""
}

// runHandler calls h, turning a panic into a plain (non-retry) error so
// one bad message cannot kill the consumer.
func runHandler(ctx context.Context, h Handler, msg Message) (reply any, err error) {
	defer func() {
		if p := recover(); p != nil {
			reply, err = nil, &panicError{val: p, stack: debug.Stack()}
		}
	}()
	return h(ctx, msg)
}

// panicError is a recovered handler panic; the stack is for the log, the
// message for the caller.
type panicError struct {
	val   any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.val) }

func cloneMessage(m Message) Message {
	m.Body = slices.Clone(m.Body)
	return m
}
