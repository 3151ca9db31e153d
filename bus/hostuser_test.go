package bus

import (
	"context"
	"net/url"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

// A compute host's broker user, with the permissions deploy/lib.sh gives
// it (cap_rabbit_agent_user), runs an agent's bus (passive declares, its
// own queue, replies to calls) and can do nothing to another host's queue
// nor to the control plane's.
func TestAMQPPerHostUser(t *testing.T) {
	t.Parallel()
	ctl, err := exec.LookPath("rabbitmqctl")
	testenv.Require(t, err == nil, "rabbitmqctl not available: %v", err)
	e := newAMQPEnv(t)
	admin := e.dial(t, AMQPOptions{}) // makes the exchange and shared queues
	ctx := testCtx(t, 60*time.Second)

	id := newID()[:8]
	host, other := "t"+id, "o"+id
	user, pass := "capsule-agent-"+host, "pw-"+newID()
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	vhost := u.Path
	if vhost == "" || vhost == "/" {
		vhost = "/"
	} else {
		vhost, _ = url.PathUnescape(vhost[1:])
	}
	_, file, _, _ := runtime.Caller(0)
	lib := filepath.Join(filepath.Dir(file), "..", "deploy", "lib.sh")
	cmd := exec.CommandContext(ctx, "bash", "-c", `set -e; . "$1"; cap_rabbit_agent_user "$2" "$3" "$4" "$5"`, "sh", lib, user, pass, vhost, host)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cap_rabbit_agent_user: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(ctl, "-q", "delete_user", user).Run() })
	hostURL := *u
	hostURL.User = url.UserPassword(user, pass)

	// The agent's bus works: it consumes its own queue and answers a
	// call from the control plane through the exchange.
	e.mu.Lock()
	e.queues = append(e.queues, ComputeQueue(host), ComputeQueue(other))
	e.mu.Unlock()
	agent := e.dialURL(t, hostURL.String(), AMQPOptions{Passive: true})
	t.Cleanup(func() { agent.Close() }) // before its user goes
	if err := agent.Consume(ctx, ComputeQueue(host), func(_ context.Context, m Message) (any, error) {
		return "pong from " + host, nil
	}); err != nil {
		t.Fatal(err)
	}
	var reply string
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := admin.Call(cctx, ComputeQueue(host), mustMsg(t, "ping", nil), &reply); err != nil || reply != "pong from "+host {
		t.Fatalf("call to the host's agent: %q %v", reply, err)
	}
	if err := admin.Consume(ctx, ComputeQueue(other), func(context.Context, Message) (any, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}

	// Raw, as a compromised host would try.
	conn, err := amqp.Dial(hostURL.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	refused := func(what string, f func(ch *amqp.Channel) error) {
		t.Helper()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		closes := ch.NotifyClose(make(chan *amqp.Error, 1))
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		err = f(ch)
		if err == nil {
			select {
			case ae := <-closes:
				err = ae
			case <-time.After(2 * time.Second):
			}
		}
		ae, ok := err.(*amqp.Error)
		if !ok || ae.Code != amqp.AccessRefused {
			t.Errorf("%s: %v, want ACCESS_REFUSED", what, err)
		}
	}
	publish := func(exchange, key string) func(ch *amqp.Channel) error {
		return func(ch *amqp.Channel) error {
			return ch.PublishWithContext(ctx, exchange, key, false, false,
				amqp.Publishing{Type: "power_sync", UserId: user, ContentType: contentJSON, Body: []byte(`{"host":"` + other + `"}`)})
		}
	}
	refused("publish to another host's queue", publish(exchangeName, ComputeQueue(other)))
	refused("publish to the scheduler", publish(exchangeName, SchedulerQueue))
	refused("publish through the default exchange", publish("", ComputeQueue(other)))
	refused("consume another host's queue", func(ch *amqp.Channel) error {
		_, err := ch.Consume(ComputeQueue(other), "", false, false, false, false, nil)
		return err
	})
	refused("bind another host's queue", func(ch *amqp.Channel) error {
		return ch.QueueBind(ComputeQueue(other), "#", exchangeName, false, nil)
	})
	refused("delete the conductor's queue", func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(ConductorQueue, false, false, false)
		return err
	})
	refused("declare the exchange", func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(exchangeName, amqp.ExchangeTopic, true, false, false, false, nil)
	})
}
