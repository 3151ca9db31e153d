package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/capsule-cloud/capsule/errdefs"
)

// exchangeName is the durable topic exchange every queue is bound to, with
// the queue's name as binding key.
const exchangeName = "capsule"

const (
	// publishTokenHeader carries a per-publish token so a basic.return can
	// be matched to the publish it rejects (MessageId is not unique: a
	// message may be published again).
	publishTokenHeader = "x-capsule-publish"
	// errorHeader marks a Call reply as a handler error; its value is the
	// error text. The kind, safe message and reason of a classified error
	// (package errdefs) travel in the three headers after it.
	errorHeader        = "x-capsule-error"
	errorKindHeader    = "x-capsule-error-kind"
	errorMessageHeader = "x-capsule-error-message"
	errorReasonHeader  = "x-capsule-error-reason"
	contentJSON        = "application/json"
	// replyPublishTimeout bounds how long a consumer tries to send a Call
	// reply before it gives up (the caller then times out).
	replyPublishTimeout = 30 * time.Second
)

// AMQPOptions tunes an AMQP bus; the zero value is production-ready.
type AMQPOptions struct {
	// Prefetch is how many unacked messages one consumer holds, i.e. how
	// many of its handlers run at once (default DefaultPrefetch: an agent takes ten
	// boots and their deletes at once).
	Prefetch int
	// RetryDelay is how long a Retry-marked message waits before it is
	// requeued (default RetryDelay).
	RetryDelay time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnect attempts, and between the attempts of a publish the broker
	// refused (default 100ms and 10s).
	ReconnectMin, ReconnectMax time.Duration
	// ConfirmTimeout is how long a publish waits for the broker's confirm
	// before it is published again on a fresh channel (default 15s).
	ConfirmTimeout time.Duration
	// Declare lists extra queues declared and bound on every (re)connect,
	// so a publish to them is routable before their consumer first
	// starts. SchedulerQueue and ConductorQueue are always declared: the
	// API may publish to the scheduler before the scheduler ever ran, and
	// a publish to a queue that does not exist yet fails as unroutable.
	Declare []string
	// QueueType is the type of the durable work queues (scheduler,
	// conductor, compute.<host>): QueueClassic (the default) or
	// QueueQuorum, replicated over a RabbitMQ cluster's nodes so the
	// queues and their messages survive the loss of a node. A queue keeps
	// the type it was created with: changing it needs the queues deleted
	// (they are re-declared at the next connect).
	QueueType string
	// Passive declares the exchange and the shared queues (scheduler,
	// conductor) passively: they must exist, made by the control plane.
	// A compute host's own broker user may not configure them (it could
	// delete the conductor's queue); the bus retries until they exist.
	Passive bool
	// Name is advertised as the connection name (shown by rabbitmqctl and
	// the management UI).
	Name string
	// Logger receives the bus's logs (default slog.Default()).
	Logger *slog.Logger
}

// Queue types (AMQPOptions.QueueType).
const (
	QueueClassic = "classic"
	QueueQuorum  = "quorum"
)

// queueArgs are the declare arguments of a work queue of type typ.
func queueArgs(typ string) amqp.Table {
	if typ == QueueQuorum {
		return amqp.Table{"x-queue-type": QueueQuorum}
	}
	return nil
}

func (o AMQPOptions) withDefaults() AMQPOptions {
	if o.QueueType == "" {
		o.QueueType = QueueClassic
	}
	if o.Prefetch <= 0 {
		o.Prefetch = DefaultPrefetch
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = RetryDelay
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = 100 * time.Millisecond
	}
	if o.ReconnectMax <= 0 {
		o.ReconnectMax = 10 * time.Second
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = o.ReconnectMin
	}
	if o.ConfirmTimeout <= 0 {
		o.ConfirmTimeout = 15 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// AMQP is the RabbitMQ Bus. It keeps one connection, replaced with
// exponential backoff whenever it or its reply channel closes; consumers
// resume on the new connection and publishes wait for it. Channels: one in
// confirm mode for all publishes (replaced by a fresh one whenever the
// broker refuses or does not confirm a publish), one for Call replies, and
// one per consumer (so a consumer's Qos and failures are its own).
type AMQP struct {
	url  string
	user string // the broker user, stamped as user_id on every publish
	opts AMQPOptions
	log  *slog.Logger

	// life ends on Close; every goroutine of the bus watches it.
	life context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup // the connection manager

	mu     sync.Mutex
	closed bool
	sess   *amqpSession  // nil while disconnected
	ready  chan struct{} // closed when sess is set

	callsMu sync.Mutex
	calls   map[string]chan amqpReply // by correlation id
}

var _ Bus = (*AMQP)(nil)

// errSessionLost means the connection went away mid-operation; the
// operation is repeated on the next connection.
var errSessionLost = errors.New("bus: connection lost")

// notConfirmedError means the broker did not take a publish: it refused
// it (basic.nack), its channel closed before the confirm, or no confirm
// came within ConfirmTimeout. The publish is repeated on a fresh channel.
type notConfirmedError struct{ reason string }

func (e *notConfirmedError) Error() string { return "not confirmed: " + e.reason }

// amqpSession is one live connection and its shared channels.
type amqpSession struct {
	conn       *amqp.Connection
	netConn    net.Conn // the socket, for tests that simulate a network failure
	replyQueue string
	closes     []chan *amqp.Error // conn and reply channel closes

	// pubMu serialises publishes (so sequence numbers match waiters) and
	// the replacement of pub.
	pubMu sync.Mutex
	pub   *confirmChannel // nil once retired, until the next publish opens one

	lost     chan struct{} // closed when the session ended
	lostOnce sync.Once
}

// confirmChannel is a channel in confirm mode and the publishes waiting
// for its confirms.
//
// A channel is retired (closed, its waiters published again on a fresh
// one) when the broker refuses a publish: a RabbitMQ channel keeps a
// client state per quorum queue that can refuse every later publish to
// that queue (see docs/operations.md, "A highly available control
// plane"), and only a new channel starts over.
type confirmChannel struct {
	ch      *amqp.Channel
	wmu     sync.Mutex
	waiters map[uint64]pubWaiter // by publish sequence number; nil once the channel closed
}

type pubWaiter struct {
	token string
	done  chan pubResult
}

type pubResult struct {
	lost     bool
	acked    bool
	returned string // reply code and text of a basic.return, if any
}

type amqpReply struct {
	body []byte
	err  *wireError // nil: the handler succeeded
}

// DialAMQP connects to RabbitMQ at url and declares the topology. It
// retries transient failures (broker not up yet) with backoff until ctx
// ends; bad credentials or a bad URL fail at once.
func DialAMQP(ctx context.Context, url string, opts AMQPOptions) (*AMQP, error) {
	uri, err := amqp.ParseURI(url)
	if err != nil {
		return nil, fmt.Errorf("bus: parse AMQP URL: %w", err)
	}
	if opts.QueueType != "" && opts.QueueType != QueueClassic && opts.QueueType != QueueQuorum {
		return nil, fmt.Errorf("bus: unknown queue type %q (want %s or %s)", opts.QueueType, QueueClassic, QueueQuorum)
	}
	opts = opts.withDefaults()
	life, stop := context.WithCancel(context.Background())
	a := &AMQP{
		url:   url,
		user:  uri.Username,
		opts:  opts,
		log:   opts.Logger.With("component", "bus"),
		life:  life,
		stop:  stop,
		ready: make(chan struct{}),
		calls: map[string]chan amqpReply{},
	}
	backoff := opts.ReconnectMin
	for {
		s, err := a.connect(ctx)
		if err == nil {
			a.wg.Add(1)
			go a.run(s)
			return a, nil
		}
		if !transient(err) || ctx.Err() != nil {
			stop()
			return nil, fmt.Errorf("bus: connect to RabbitMQ: %w", err)
		}
		a.log.Warn("bus: RabbitMQ not reachable yet; retrying", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			stop()
			return nil, fmt.Errorf("bus: connect to RabbitMQ: %w (last error: %v)", ctx.Err(), err)
		}
		backoff = min(2*backoff, opts.ReconnectMax)
	}
}

// transient reports whether a connect error may go away by retrying.
func transient(err error) bool {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		// A queue of another type (bus.queue_type) is a configuration
		// error: retrying will not fix it.
		return (ae.Recover && ae.Code != amqp.PreconditionFailed) || ae.Code == amqp.ConnectionForced
	}
	return true // network errors
}

// connect dials and sets up a session: exchange, declared queues, the
// confirm-mode publish channel and the private reply queue.
func (a *AMQP) connect(ctx context.Context) (s *amqpSession, err error) {
	var netConn net.Conn
	props := amqp.NewConnectionProperties()
	if a.opts.Name != "" {
		props.SetClientConnectionName(a.opts.Name)
	}
	cfg := amqp.Config{
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: 10 * time.Second}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The handshake must not stall on a dead broker; the library
			// clears the deadline once the connection is open.
			if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
				c.Close()
				return nil, err
			}
			netConn = c
			return c, nil
		},
	}
	conn, err := amqp.DialConfig(a.url, cfg)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	s = &amqpSession{conn: conn, netConn: netConn, lost: make(chan struct{})}
	s.closes = append(s.closes, conn.NotifyClose(make(chan *amqp.Error, 1)))

	// The topology is declared on what becomes the first publish channel.
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open publish channel: %w", err)
	}
	shared := []string{SchedulerQueue, ConductorQueue}
	if a.opts.Passive {
		if err := ch.ExchangeDeclarePassive(exchangeName, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return nil, fmt.Errorf("exchange %s (made by the control plane): %w", exchangeName, err)
		}
		for _, q := range shared {
			if _, err := ch.QueueDeclarePassive(q, true, false, false, false, nil); err != nil {
				return nil, fmt.Errorf("queue %s (made by the control plane): %w", q, err)
			}
		}
		shared = nil
	} else if err := ch.ExchangeDeclare(exchangeName, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("declare exchange %s: %w", exchangeName, err)
	}
	for _, q := range append(shared, a.opts.Declare...) {
		if err := declareQueue(ch, q, a.opts.QueueType); err != nil {
			return nil, err
		}
	}
	if s.pub, err = newConfirmChannel(ch); err != nil {
		return nil, err
	}

	rch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open reply channel: %w", err)
	}
	s.closes = append(s.closes, rch.NotifyClose(make(chan *amqp.Error, 1)))
	q, err := rch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return nil, fmt.Errorf("declare reply queue: %w", err)
	}
	// Replies come through the exchange, not the default one: a compute
	// host's user may then publish only the routing keys its topic
	// permissions allow (the default exchange reaches every queue).
	if err := rch.QueueBind(q.Name, q.Name, exchangeName, false, nil); err != nil {
		return nil, fmt.Errorf("bind reply queue: %w", err)
	}
	replies, err := rch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume reply queue: %w", err)
	}
	s.replyQueue = q.Name
	go a.readReplies(replies)
	return s, nil
}

// declareQueue declares a durable queue of type typ and binds it to the
// exchange under its own name.
func declareQueue(ch *amqp.Channel, queue, typ string) error {
	if _, err := ch.QueueDeclare(queue, true, false, false, false, queueArgs(typ)); err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
			return fmt.Errorf("declare queue %s as %s: it exists with other arguments (was bus.queue_type changed? "+
				"delete the old queue, e.g. rabbitmqctl delete_queue %s, once it is drained): %w", queue, typ, queue, err)
		}
		return fmt.Errorf("declare queue %s: %w", queue, err)
	}
	if err := ch.QueueBind(queue, queue, exchangeName, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", queue, err)
	}
	return nil
}

// run keeps the bus connected until Close: it waits for the session to
// end, then reconnects with exponential backoff.
func (a *AMQP) run(s *amqpSession) {
	defer a.wg.Done()
	for {
		a.setSession(s)
		reason := s.wait(a.life)
		a.dropSession(s)
		s.conn.Close()
		if a.life.Err() != nil {
			return
		}
		a.log.Warn("bus: connection lost; reconnecting", "reason", reason)
		backoff := a.opts.ReconnectMin
		for {
			select {
			case <-time.After(backoff):
			case <-a.life.Done():
				return
			}
			ns, err := a.connect(a.life)
			if err == nil {
				if a.life.Err() != nil {
					ns.conn.Close()
					return
				}
				a.log.Info("bus: reconnected")
				s = ns
				break
			}
			backoff = min(2*backoff, a.opts.ReconnectMax)
			a.log.Warn("bus: reconnect failed", "err", err, "retry_in", backoff)
		}
	}
}

// wait blocks until the connection or a shared channel closes, or ctx
// ends, and says why.
func (s *amqpSession) wait(ctx context.Context) string {
	cases := make(chan string, len(s.closes))
	for _, c := range s.closes {
		go func() {
			select {
			case e, ok := <-c:
				if ok && e != nil {
					cases <- e.Error()
				} else {
					cases <- "closed"
				}
			case <-s.lost:
			}
		}()
	}
	select {
	case r := <-cases:
		return r
	case <-ctx.Done():
		return "bus closed"
	}
}

func (a *AMQP) setSession(s *amqpSession) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sess = s
	close(a.ready)
}

func (a *AMQP) dropSession(s *amqpSession) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sess == s {
		a.sess = nil
		a.ready = make(chan struct{})
	}
	s.lostOnce.Do(func() { close(s.lost) })
}

// session returns the live session, waiting for a reconnect until ctx
// ends.
func (a *AMQP) session(ctx context.Context) (*amqpSession, error) {
	for {
		a.mu.Lock()
		s, ready, closed := a.sess, a.ready, a.closed
		a.mu.Unlock()
		if closed {
			return nil, errClosed
		}
		if s != nil {
			return s, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the RabbitMQ connection: %w", ctx.Err())
		case <-a.life.Done():
			return nil, errClosed
		}
	}
}

// withSession runs f on the live session, again on the next one whenever
// f reports the session lost, until ctx ends.
func (a *AMQP) withSession(ctx context.Context, f func(*amqpSession) error) error {
	for {
		s, err := a.session(ctx)
		if err != nil {
			return err
		}
		err = f(s)
		if !errors.Is(err, errSessionLost) {
			return err
		}
		select {
		case <-s.lost:
		case <-ctx.Done():
			return fmt.Errorf("%w; %w", err, ctx.Err())
		}
	}
}

// newConfirmChannel puts ch in confirm mode and tracks its confirms.
func newConfirmChannel(ch *amqp.Channel) (*confirmChannel, error) {
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("enable publisher confirms: %w", err)
	}
	c := &confirmChannel{ch: ch, waiters: map[uint64]pubWaiter{}}
	// Unbuffered on purpose: the library hands over a basic.return before
	// it processes the ack of the same publish, so trackConfirms always
	// sees the return first (see there).
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation))
	returns := ch.NotifyReturn(make(chan amqp.Return))
	go c.trackConfirms(confirms, returns)
	return c, nil
}

// publishChannel returns the session's publish channel, opening a fresh
// one if the last was retired or closed. The caller holds pubMu.
func (s *amqpSession) publishChannel() (*confirmChannel, error) {
	if s.pub != nil && !s.pub.ch.IsClosed() {
		return s.pub, nil
	}
	ch, err := s.conn.Channel()
	if err != nil {
		// The connection is broken (or out of channels): start over on a
		// new one.
		s.fail()
		return nil, fmt.Errorf("%w: open publish channel: %v", errSessionLost, err)
	}
	pc, err := newConfirmChannel(ch)
	if err != nil {
		_ = ch.Close()
		s.fail()
		return nil, fmt.Errorf("%w: %v", errSessionLost, err)
	}
	s.pub = pc
	return pc, nil
}

// retire closes pc so the next publish opens a fresh channel; publishes
// still waiting on pc are resolved as not confirmed and published again.
func (s *amqpSession) retire(pc *confirmChannel) {
	s.pubMu.Lock()
	if s.pub == pc {
		s.pub = nil
	}
	s.pubMu.Unlock()
	_ = pc.ch.Close()
}

// trackConfirms resolves publish waiters from the channel's confirms.
// RabbitMQ sends the basic.return of an unroutable mandatory message
// before its basic.ack, and the library delivers both from one goroutine
// over unbuffered channels, so by the time this loop reads the ack it has
// already recorded the return: no race between the two.
func (c *confirmChannel) trackConfirms(confirms <-chan amqp.Confirmation, returns <-chan amqp.Return) {
	returned := map[string]string{}
	for confirms != nil {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			if tok, _ := r.Headers[publishTokenHeader].(string); tok != "" {
				returned[tok] = strconv.Itoa(int(r.ReplyCode)) + " " + r.ReplyText
			}
		case cf, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			c.wmu.Lock()
			w, found := c.waiters[cf.DeliveryTag]
			delete(c.waiters, cf.DeliveryTag)
			c.wmu.Unlock()
			if found {
				w.done <- pubResult{acked: cf.Ack, returned: returned[w.token]}
				delete(returned, w.token)
			}
		}
	}
	// The channel closed: publishes still waiting may or may not have
	// reached the queue; they are published again.
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for _, w := range c.waiters {
		w.done <- pubResult{lost: true}
	}
	c.waiters = nil
}

// fail ends the session as a network failure would, so run reconnects
// even when the library has not noticed the breakage itself.
func (s *amqpSession) fail() {
	if s.netConn != nil {
		s.netConn.Close()
	} else {
		s.conn.Close()
	}
}

// publishOn publishes once on s's confirm channel and waits for the
// confirm, at most confirmTimeout. mandatory publishes fail when no queue
// is bound to key. A publish the broker did not take fails with a
// *notConfirmedError after retiring the channel; one whose connection
// broke, with errSessionLost.
func (s *amqpSession) publishOn(ctx context.Context, confirmTimeout time.Duration, exchange, key string, mandatory bool, p amqp.Publishing) error {
	token := newID()
	if mandatory {
		h := amqp.Table{publishTokenHeader: token}
		for k, v := range p.Headers {
			h[k] = v
		}
		p.Headers = h
	}
	done := make(chan pubResult, 1)

	s.pubMu.Lock()
	pc, err := s.publishChannel()
	if err != nil {
		s.pubMu.Unlock()
		return err
	}
	seq := pc.ch.GetNextPublishSeqNo()
	pc.wmu.Lock()
	if pc.waiters == nil {
		pc.wmu.Unlock()
		s.pubMu.Unlock()
		return &notConfirmedError{reason: "publish channel closed"}
	}
	pc.waiters[seq] = pubWaiter{token: token, done: done}
	pc.wmu.Unlock()
	err = pc.ch.PublishWithContext(ctx, exchange, key, mandatory, false, p)
	if err != nil {
		pc.wmu.Lock()
		if pc.waiters != nil {
			delete(pc.waiters, seq)
		}
		pc.wmu.Unlock()
	}
	s.pubMu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s.conn.IsClosed() {
			return fmt.Errorf("%w: %v", errSessionLost, err)
		}
		// The channel is broken (the library may not have noticed yet):
		// publish again on a fresh one.
		s.retire(pc)
		return &notConfirmedError{reason: fmt.Sprintf("send: %v", err)}
	}

	timer := time.NewTimer(confirmTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		switch {
		case r.lost && s.conn.IsClosed():
			return errSessionLost
		case r.lost:
			return &notConfirmedError{reason: "publish channel closed before the confirm"}
		case r.returned != "":
			return fmt.Errorf("unroutable (no queue bound to %q): %s", key, r.returned)
		case !r.acked:
			// RabbitMQ 3.10's channel may refuse every later publish to a
			// quorum queue once it refused one (its client state for the
			// queue still names a leader that is gone): only a fresh
			// channel starts over.
			s.retire(pc)
			return &notConfirmedError{reason: "broker refused the message (nack)"}
		}
		return nil
	case <-timer.C:
		s.retire(pc)
		return &notConfirmedError{reason: fmt.Sprintf("no confirm within %s", confirmTimeout)}
	case <-ctx.Done():
		return fmt.Errorf("waiting for the broker's confirm: %w", ctx.Err())
	}
}

// publish publishes the message pub makes for a session until the broker
// confirms it, and returns the session that took it: through reconnects
// (waiting for the next session) and refusals (again on a fresh channel,
// with exponential backoff), until ctx ends. A publish repeated after a
// lost confirm may reach the queue twice (consumers are idempotent).
func (a *AMQP) publish(ctx context.Context, key string, mandatory bool, pub func(*amqpSession) amqp.Publishing) (*amqpSession, error) {
	backoff := a.opts.ReconnectMin
	for attempt := 1; ; attempt++ {
		s, err := a.session(ctx)
		if err != nil {
			return nil, err
		}
		err = s.publishOn(ctx, a.opts.ConfirmTimeout, exchangeName, key, mandatory, pub(s))
		var nc *notConfirmedError
		switch {
		case err == nil:
			return s, nil
		case errors.Is(err, errSessionLost):
			select {
			case <-s.lost:
			case <-ctx.Done():
				return nil, fmt.Errorf("%w; %w", err, ctx.Err())
			}
		case errors.As(err, &nc):
			a.log.Warn("bus: publish not confirmed; publishing again on a fresh channel",
				"queue", key, "reason", nc.reason, "attempt", attempt, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil, fmt.Errorf("%w; %w", err, ctx.Err())
			}
			backoff = min(2*backoff, a.opts.ReconnectMax)
		default:
			return nil, err
		}
	}
}

// Publish implements Bus. During an outage it waits for the reconnect
// until ctx ends; a message the broker refused (nack) or did not confirm
// is published again on a fresh channel, so consumers may see it twice
// (they are idempotent).
func (a *AMQP) Publish(ctx context.Context, queue string, m Message) error {
	p := amqp.Publishing{
		ContentType:  contentJSON,
		DeliveryMode: amqp.Persistent,
		MessageId:    m.ID,
		Type:         m.Kind,
		Timestamp:    time.Now(),
		UserId:       a.user,
		Body:         m.Body,
	}
	if _, err := a.publish(ctx, queue, true, func(*amqpSession) amqp.Publishing { return p }); err != nil {
		return fmt.Errorf("bus: publish %s %s to %s: %w", m.Kind, m.ID, queue, err)
	}
	return nil
}

// Call implements Bus. The reply comes to the connection's private reply
// queue; if the connection is lost while waiting, that queue is gone, so
// the request is sent again from the new connection.
func (a *AMQP) Call(ctx context.Context, queue string, m Message, reply any) error {
	corr := newID()
	replies := make(chan amqpReply, 1)
	a.callsMu.Lock()
	a.calls[corr] = replies
	a.callsMu.Unlock()
	defer func() {
		a.callsMu.Lock()
		delete(a.calls, corr)
		a.callsMu.Unlock()
	}()

	for {
		s, err := a.publish(ctx, queue, true, func(s *amqpSession) amqp.Publishing {
			p := amqp.Publishing{
				ContentType:   contentJSON,
				DeliveryMode:  amqp.Persistent,
				MessageId:     m.ID,
				Type:          m.Kind,
				Timestamp:     time.Now(),
				CorrelationId: corr,
				ReplyTo:       s.replyQueue,
				UserId:        a.user,
				Body:          m.Body,
			}
			// Nobody waits for the reply after the deadline: let the
			// broker drop a request still queued by then.
			if dl, ok := ctx.Deadline(); ok {
				p.Expiration = strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10)
			}
			return p
		})
		switch {
		case err != nil && ctx.Err() != nil:
			return callCtxErr(queue, m, ctx.Err())
		case err != nil:
			return fmt.Errorf("bus: call %s %s on %s: %w", m.Kind, m.ID, queue, err)
		}
		select {
		case r := <-replies:
			return decodeReply(queue, m, r.err, r.body, reply)
		case <-ctx.Done():
			return callCtxErr(queue, m, ctx.Err())
		case <-s.lost:
			select {
			case r := <-replies:
				return decodeReply(queue, m, r.err, r.body, reply)
			default:
			}
			a.log.Info("bus: connection lost during call; sending it again", "queue", queue, "kind", m.Kind, "id", m.ID)
		}
	}
}

// readReplies routes replies to waiting Calls; a reply nobody waits for
// (the caller timed out) is dropped.
func (a *AMQP) readReplies(replies <-chan amqp.Delivery) {
	for d := range replies {
		a.callsMu.Lock()
		ch := a.calls[d.CorrelationId]
		a.callsMu.Unlock()
		if ch == nil {
			continue
		}
		r := amqpReply{body: d.Body}
		if e, ok := d.Headers[errorHeader]; ok {
			r.err = &wireError{Text: fmt.Sprint(e), Kind: headerString(d.Headers, errorKindHeader),
				Message: headerString(d.Headers, errorMessageHeader), Reason: headerString(d.Headers, errorReasonHeader)}
		}
		select {
		case ch <- r:
		default:
		}
	}
}

// Consume implements Bus. The queue is declared and the consumer started
// before it returns, so a publish right after it is routable and seen;
// during an outage it waits for the connection until ctx ends. Handlers
// get a context that ends with ctx or Close; a handler error returned
// after that requeues the message instead of dropping it, since the work
// was interrupted rather than failed.
func (a *AMQP) Consume(ctx context.Context, queue string, h Handler) error {
	cctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(a.life, cancel)
	c := &amqpConsumer{a: a, ctx: cctx, queue: queue, h: h, tag: "capsule-" + newID(),
		log: a.log.With("queue", queue)}
	var ch *amqp.Channel
	var deliveries <-chan amqp.Delivery
	err := a.withSession(ctx, func(s *amqpSession) error {
		var err error
		ch, deliveries, err = c.start(s)
		if err != nil && (s.conn.IsClosed() || errors.Is(err, amqp.ErrClosed)) {
			return fmt.Errorf("%w: %v", errSessionLost, err)
		}
		return err
	})
	if err != nil {
		cancel()
		stopOnClose()
		return fmt.Errorf("bus: consume %s: %w", queue, err)
	}
	go func() {
		defer cancel()
		defer stopOnClose()
		c.run(ch, deliveries)
	}()
	return nil
}

type amqpConsumer struct {
	a     *AMQP
	ctx   context.Context // ends with the Consume ctx or Close
	queue string
	h     Handler
	tag   string
	log   *slog.Logger
}

// start opens the consumer's own channel and starts consuming.
func (c *amqpConsumer) start(s *amqpSession) (*amqp.Channel, <-chan amqp.Delivery, error) {
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Qos(c.a.opts.Prefetch, 0, false); err != nil {
		ch.Close()
		return nil, nil, fmt.Errorf("set prefetch: %w", err)
	}
	if err := declareQueue(ch, c.queue, c.a.opts.QueueType); err != nil {
		ch.Close()
		return nil, nil, err
	}
	deliveries, err := ch.Consume(c.queue, c.tag, false, false, false, false, nil)
	if err != nil {
		ch.Close()
		return nil, nil, fmt.Errorf("consume: %w", err)
	}
	return ch, deliveries, nil
}

// run serves deliveries and, whenever the channel dies (connection lost,
// queue deleted), starts over on the current connection until ctx ends.
func (c *amqpConsumer) run(ch *amqp.Channel, deliveries <-chan amqp.Delivery) {
	for {
		c.serve(ch, deliveries)
		if c.ctx.Err() != nil {
			return
		}
		c.log.Warn("bus: consumer channel closed; resuming")
		backoff := c.a.opts.ReconnectMin
		for {
			s, err := c.a.session(c.ctx)
			if err != nil {
				return
			}
			if ch, deliveries, err = c.start(s); err == nil {
				c.log.Info("bus: consumer resumed")
				break
			}
			c.log.Warn("bus: resume consumer failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.lost:
			case <-c.ctx.Done():
				return
			}
			backoff = min(2*backoff, c.a.opts.ReconnectMax)
		}
	}
}

// serve runs a handler per delivery (the broker's prefetch bounds how many
// at once) until the channel closes or ctx ends. When ctx ends it waits
// for the running handlers so their acks go out on this channel; when the
// channel died it returns at once so the consumer resumes on the new
// connection without waiting for slow handlers, whose messages the broker
// has already requeued.
func (c *amqpConsumer) serve(ch *amqp.Channel, deliveries <-chan amqp.Delivery) {
	var running sync.WaitGroup
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				_ = ch.Close()
				return
			}
			running.Go(func() { c.handle(d) })
		case <-c.ctx.Done():
			if err := ch.Cancel(c.tag, false); err != nil {
				c.log.Debug("bus: cancel consumer", "err", err)
			}
			running.Wait()
			// Closing the channel requeues what was prefetched but not
			// handled.
			_ = ch.Close()
			return
		}
	}
}

// handle runs the handler on one delivery and settles it: ack after
// success or a permanent failure, requeue after a Retry (past the retry
// delay) or when the consumer is stopping mid-work.
func (c *amqpConsumer) handle(d amqp.Delivery) {
	m := Message{ID: d.MessageId, Kind: d.Type, Body: d.Body, Redelivered: d.Redelivered, Sender: d.UserId}
	log := c.log.With("kind", m.Kind, "id", m.ID, "redelivered", m.Redelivered)
	if m.Sender == "" {
		// Every Capsule publisher sets user_id (the broker checks it is
		// its own user): a message without one is not Capsule's, or is a
		// host hiding which host it is.
		log.Warn("bus: message without user_id dropped: its sender is unknown")
		if d.ReplyTo != "" {
			c.reply(d, nil, toWire(errdefs.Forbidden("bus: a message must carry its publisher's user_id")))
		}
		c.settle(log, d.Ack(false))
		return
	}
	reply, err := runHandler(c.ctx, c.h, m)
	if p, ok := errors.AsType[*panicError](err); ok {
		log.Error("bus: handler panicked", "panic", p.val, "stack", string(p.stack))
	}
	var body []byte
	if err == nil && d.ReplyTo != "" {
		var merr error
		if body, merr = json.Marshal(reply); merr != nil {
			err = fmt.Errorf("bus: encode reply to %s %s: %w", m.Kind, m.ID, merr)
		}
	}
	switch {
	case err == nil:
		if d.ReplyTo != "" {
			c.reply(d, body, nil)
		}
		c.settle(log, d.Ack(false))
	case c.ctx.Err() != nil:
		// Stopping: the error is likely the cancellation itself, so let
		// another consumer do the work.
		log.Info("bus: handler interrupted; requeueing", "err", err)
		c.settle(log, d.Nack(false, true))
	case IsRetry(err):
		log.Info("bus: handler asked for a retry", "err", err, "delay", c.a.opts.RetryDelay)
		t := time.NewTimer(c.a.opts.RetryDelay)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
		}
		c.settle(log, d.Nack(false, true))
	default:
		log.Error("bus: handler failed; message dropped", "err", err)
		if d.ReplyTo != "" {
			c.reply(d, nil, toWire(err))
		}
		c.settle(log, d.Ack(false))
	}
}

func (c *amqpConsumer) settle(log *slog.Logger, err error) {
	if err != nil {
		// The channel is gone: the broker requeues the message itself.
		log.Warn("bus: ack/nack failed; the broker will redeliver", "err", err)
	}
}

// reply sends a Call's result (or handler error) to the caller's reply
// queue. Not mandatory: a caller that went away simply gets nothing.
func (c *amqpConsumer) reply(d amqp.Delivery, body []byte, werr *wireError) {
	p := amqp.Publishing{
		ContentType:   contentJSON,
		DeliveryMode:  amqp.Transient,
		CorrelationId: d.CorrelationId,
		Type:          d.Type,
		Timestamp:     time.Now(),
		UserId:        c.a.user,
		Body:          body,
	}
	if werr != nil {
		p.Headers = amqp.Table{errorHeader: werr.Text}
		for h, v := range map[string]string{errorKindHeader: werr.Kind, errorMessageHeader: werr.Message, errorReasonHeader: werr.Reason} {
			if v != "" {
				p.Headers[h] = v
			}
		}
	}
	ctx, cancel := context.WithTimeout(c.a.life, replyPublishTimeout)
	defer cancel()
	if _, err := c.a.publish(ctx, d.ReplyTo, false, func(*amqpSession) amqp.Publishing { return p }); err != nil {
		c.log.Warn("bus: send reply failed", "kind", d.Type, "id", d.MessageId, "err", err)
	}
}

// Close implements Bus: consumers stop, the connection closes, and the
// broker requeues whatever was not acked yet. It does not wait for
// running handlers (a stuck one must not block shutdown).
func (a *AMQP) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	a.stop()
	a.wg.Wait()
	return nil
}

// dropConnection cuts the socket under the current connection, as a
// network failure would (for tests).
func (a *AMQP) dropConnection() bool {
	a.mu.Lock()
	s := a.sess
	a.mu.Unlock()
	if s == nil || s.netConn == nil {
		return false
	}
	s.netConn.Close()
	return true
}

// headerString returns header h of a delivery as a string, "" if absent.
func headerString(t amqp.Table, h string) string {
	if v, ok := t[h]; ok {
		return fmt.Sprint(v)
	}
	return ""
}
