// Package bus is Capsule's message bus: the only way the control plane and
// the per-host agents talk. The production implementation (amqp.go) runs
// on RabbitMQ; membus.go is an in-process bus for fast unit tests.
//
// Topology (RabbitMQ): one durable topic exchange "capsule"; durable
// queues bound by routing key: "scheduler", "conductor" and "compute.<host>"
// (one per agent). Messages are persistent and published with confirms;
// a consumer acks only after its handler returned, i.e. after the work was
// recorded, so a crash redelivers and handlers must be idempotent.
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
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

// RemoteError is a handler's error carried back to a caller.
type RemoteError struct{ Message string }

func (e *RemoteError) Error() string { return e.Message }

// ErrTimeout is returned by Call when no reply came before the deadline.
var ErrTimeout = errors.New("bus: no reply before the deadline")

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
