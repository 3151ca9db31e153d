package compute

import (
	"context"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// TestCommittedWorkOutlivesThePublish is the API's kill point "committed,
// never published": with the broker gone, each action is accepted with its
// task and its message committed together; the message waits in the
// outbox (nothing was undone) and a relay delivers it afterwards, once.
func TestCommittedWorkOutlivesThePublish(t *testing.T) {
	f := newFixture(t)
	ids := map[string]string{}
	for _, name := range []string{"resize", "delete", "snapshot", "rebuild", "reboot"} {
		ids[name] = f.create("demo", name)
		f.placeActive(ids[name], 16)
	}
	f.bus.Close() // every publish fails from here: as if the API died right after its commit
	calls := []struct {
		name, method, path, body, task, kind string
		status                               int
	}{
		{"resize", "POST", "/action", `{"resize":{"flavorRef":"2"}}`, "resize_prep", protocol.KindResizeInstance, 202},
		{"delete", "DELETE", "", "", "deleting", protocol.KindInstanceAction, 204},
		{"snapshot", "POST", "/action", `{"createImage":{"name":"snap"}}`, "image_snapshot", protocol.KindSnapshotInstance, 202},
		{"rebuild", "POST", "/action", `{"rebuild":{"imageRef":"` + f.image + `","name":"new"}}`, "rebuilding", protocol.KindRebuildInstance, 202},
		{"reboot", "POST", "/action", `{"reboot":{"type":"SOFT"}}`, "rebooting", protocol.KindInstanceAction, 202},
	}
	for _, c := range calls {
		resp, body := f.do(c.method, "/v2.1/servers/"+ids[c.name]+c.path, "demo", c.body)
		if resp.StatusCode != c.status {
			t.Fatalf("%s with the broker gone: %d, want %d\n%s", c.name, resp.StatusCode, c.status, body)
		}
		var inst store.Instance
		f.st.DB.Where("id = ?", ids[c.name]).First(&inst)
		if string(inst.TaskState) != c.task {
			t.Errorf("%s: task %q, want %q", c.name, inst.TaskState, c.task)
		}
		if pending, err := store.OutboxPending(f.st.DB, ids[c.name]); err != nil || !pending {
			t.Errorf("%s: no message waiting in the outbox (%v)", c.name, err)
		}
	}
	// The conductor's relay, on a working broker.
	b := bus.NewMem()
	t.Cleanup(func() { b.Close() })
	// The failed publishes pushed the rows back by the relay's back-off:
	// the relay runs on a clock past any back-off (the wall clock made
	// this test fail on a loaded CI machine).
	later := func() time.Time { return time.Now().UTC().Add(10 * time.Minute) }
	relay := outbox.NewRelay(f.st, b, outbox.Options{Owner: "test", Now: later})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for pass := 0; pass < 3 && len(b.Sent(bus.ComputeQueue("h1"))) < len(calls); pass++ {
		if _, err := relay.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]int{}
	for _, m := range b.Sent(bus.ComputeQueue("h1")) {
		got[m.Kind]++
	}
	want := map[string]int{}
	for _, c := range calls {
		want[c.kind]++
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("relayed %d %s messages, want %d (all: %v)", got[k], k, n, got)
		}
	}
	var left int64
	f.st.DB.Model(&store.OutboxMessage{}).Count(&left)
	if left != 0 {
		t.Errorf("%d outbox rows left after the relay", left)
	}
}

// TestDeliveredAtOnce: with the broker up, the API publishes its own
// messages before answering and leaves nothing in the outbox.
func TestDeliveredAtOnce(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	f.activate(id, "h1")
	resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"reboot":{"type":"SOFT"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("reboot: %d\n%s", resp.StatusCode, body)
	}
	if n := len(f.bus.Sent(bus.ComputeQueue("h1"))); n != 1 {
		t.Errorf("%d messages to h1 at the response, want 1", n)
	}
	var left int64
	f.st.DB.Model(&store.OutboxMessage{}).Count(&left)
	if left != 0 {
		t.Errorf("%d outbox rows left after a delivered request", left)
	}
}
