// Package bus is Capsule's message bus: the only way the control plane and
// the per-host agents talk. The production implementation (amqp.go) runs
// on RabbitMQ; membus.go is an in-process bus for fast unit tests.
//
// Topology (RabbitMQ): one durable topic exchange "capsule"; durable
// queues bound by routing key: "scheduler", "conductor" and "compute.<host>"
// (one per agent). Messages are persistent and published with confirms;
// a consumer acks only after its handler returned, i.e. after the work was
// recorded, so a crash redelivers and handlers must be idempotent. Reply
// queues (exclusive, server-named) are bound to the exchange by their
// name and replies go through it. Every publish carries the publisher's
// broker user as user_id (see Message.Sender).
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
)

// Well-known queues (= routing keys).
const (
	SchedulerQueue = "scheduler"
	ConductorQueue = "conductor"
)

// ComputeQueue is the queue of the agent on host.
func ComputeQueue(host string) string { return "compute." + host }

// Message is what travels on the bus.
type Message struct {
	ID   string          `json:"id"`   // unique per message, for logs and dedup
	Kind string          `json:"kind"` // what the body is, e.g. "build_instance"
	Body json.RawMessage `json:"body"`
	// Redelivered is set on receipt when the broker delivers a message
	// again (after a consumer died before acking it).
	Redelivered bool `json:"-"`
	// Sender is, on receipt, the broker user that published the message:
	// every Capsule publisher sets the AMQP user_id property to the user
	// it logged in as, and RabbitMQ refuses a user_id that is not the
	// publisher's own, so a receiver can trust it. The AMQP bus drops a
	// message without one; Mem stamps MemSender (or As's). Ignored on
	// publish.
	Sender string `json:"-"`
}

// NewMessage encodes body as a message of kind.
func NewMessage(kind string, body any) (Message, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return Message{}, fmt.Errorf("bus: encode %s: %w", kind, err)
	}
	return Message{ID: newID(), Kind: kind, Body: b}, nil
}

// Decode unmarshals the body into v.
func (m Message) Decode(v any) error {
	if err := json.Unmarshal(m.Body, v); err != nil {
		return fmt.Errorf("bus: decode %s %s: %w", m.Kind, m.ID, err)
	}
	return nil
}

// Handler processes one message. A returned reply is sent back when the
// message was a Call. Returning an error marked Retry requeues the message
// (after a short delay); any other error is logged and the message is
// acked, so a poison message cannot loop forever.
type Handler func(ctx context.Context, m Message) (reply any, err error)

// Bus is the boundary every role talks through.
type Bus interface {
	// Publish sends a persistent message to queue and waits for the
	// broker's confirm.
	Publish(ctx context.Context, queue string, m Message) error
	// Call sends m to queue and waits for the handler's reply until ctx
	// ends; the reply body is decoded into reply (if not nil). A handler
	// error comes back as a *RemoteError.
	Call(ctx context.Context, queue string, m Message, reply any) error
	// Consume declares queue and runs h for each message until ctx ends.
	// It returns at once; deliveries are handled on their own goroutines,
	// up to the bus's prefetch.
	Consume(ctx context.Context, queue string, h Handler) error
	Close() error
}

// RemoteError is a handler's error carried back to a caller. When the
// handler's error was classified (package errdefs), the kind, safe message
// and reason travel with it and RemoteError unwraps to an equal errdefs
// error: errdefs.IsNotFound(err) and errdefs.Message(err) work at the
// caller as they did in the handler.
type RemoteError struct {
	Message string // the handler's whole error text, for logs
	// Kind is the kind of the outermost classified error in the
	// handler's error, "" when it had none.
	Kind errdefs.Kind
	// SafeMessage and Reason are that error's errdefs.Message and
	// errdefs.Reason.
	SafeMessage string
	Reason      string
}

func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the handler's classification, nil when it had none (or
// one this build does not know).
func (e *RemoteError) Unwrap() error {
	if !e.Kind.Valid() {
		return nil
	}
	return errdefs.New(e.Kind, e.SafeMessage).WithReason(e.Reason)
}

// wireError is a handler error as a reply carries it.
type wireError struct {
	Text, Kind, Message, Reason string
}

// toWire describes a handler's error for its reply.
func toWire(err error) *wireError {
	return &wireError{Text: err.Error(), Kind: string(errdefs.KindOf(err)), Message: errdefs.Message(err), Reason: errdefs.Reason(err)}
}

// remote is the caller's side of a wireError.
func (w *wireError) remote() *RemoteError {
	return &RemoteError{Message: w.Text, Kind: errdefs.Kind(w.Kind), SafeMessage: w.Message, Reason: w.Reason}
}

// ErrTimeout is returned by Call when no reply came before the deadline:
// an Unavailable (the peer may answer a later call).
var ErrTimeout = errdefs.Unavailable("bus: no reply before the deadline")

// retryError marks a handler error as transient.
type retryError struct{ err error }

func (e retryError) Error() string { return e.err.Error() }
func (e retryError) Unwrap() error { return e.err }

// Retry marks err as transient: the message is requeued.
func Retry(err error) error { return retryError{err} }

// IsRetry reports whether err was marked with Retry.
func IsRetry(err error) bool {
	var r retryError
	return errors.As(err, &r)
}

// RetryDelay is how long a consumer waits before requeueing a message
// whose handler asked for a retry.
const RetryDelay = 2 * time.Second

// DefaultPrefetch is how many deliveries one consumer handles at once
// unless told otherwise: above an agent's ten concurrent boots and their
// deletes (with 8, a burst of boots queued behind the deletes in flight).
const DefaultPrefetch = 32
