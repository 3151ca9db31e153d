package bus

import (
	"context"
	"net/url"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Every message the bus publishes carries its broker user as user_id, and
// the consumer hands it on as Sender; the broker refuses another user's
// user_id, and the consumer drops a message without one (a host hiding
// who it is).
func TestAMQPSenderIsTheBrokerUser(t *testing.T) {
	t.Parallel()
	e := newAMQPEnv(t)
	q := e.queue(t)
	ctx := testCtx(t, 30*time.Second)
	b := e.dial(t, AMQPOptions{})
	got := consumeInto(t, ctx, b, q)
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	user := u.User.Username()
	if err := b.Publish(ctx, q, mustMsg(t, "signed", nil)); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, got, 10*time.Second); m.Kind != "signed" || m.Sender != user {
		t.Fatalf("received %s from %q, want signed from %q", m.Kind, m.Sender, user)
	}

	conn, err := amqp.Dial(e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw := func(userID, kind string) (closed *amqp.Error) {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		closes := ch.NotifyClose(make(chan *amqp.Error, 1))
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchangeName, q, true, false,
			amqp.Publishing{Type: kind, MessageId: kind, UserId: userID, ContentType: contentJSON, Body: []byte("null")})
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, _ = dc.WaitContext(cctx)
		select {
		case e := <-closes:
			return e
		case <-time.After(200 * time.Millisecond):
			return nil
		}
	}
	if e := raw("capsule-agent-someone-else", "forged"); e == nil || e.Code != amqp.PreconditionFailed {
		t.Errorf("publish with another user's user_id: channel close %v, want PRECONDITION_FAILED", e)
	}
	if e := raw("", "anonymous"); e != nil {
		t.Fatalf("publish without user_id: %v", e)
	}
	if e := raw(user, "raw-signed"); e != nil {
		t.Fatalf("publish with own user_id: %v", e)
	}
	// Queue order: the anonymous message came before raw-signed and was
	// dropped; the forged one never got in.
	if m := recv(t, got, 10*time.Second); m.Kind != "raw-signed" || m.Sender != user {
		t.Fatalf("received %s from %q, want only raw-signed from %q", m.Kind, m.Sender, user)
	}
}
