package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
)

// vhostBatch is how many virtual hosts one rabbitmqctl call makes or
// deletes. Each rabbitmqctl call boots an Erlang VM (1-2 s of CPU): one
// add_vhost, set_permissions and delete_vhost a cloud cost 3 of them.
const vhostBatch = 8

// vhostPool hands out RabbitMQ virtual hosts, each to one cloud only: it
// makes them vhostBatch at a time with one `rabbitmqctl eval` (the
// virtual host and its permissions for the test user), and deletes
// returned ones vhostBatch at a time the same way; TestMain deletes the
// rest. Where eval cannot do it (another RabbitMQ), it falls back to one
// rabbitmqctl command each.
type vhostPool struct {
	mu   sync.Mutex
	free []string // made, never handed out
	dead []string // given back, not yet deleted
}

var rabbitVhosts = &vhostPool{}

// erlangSafe is what goes inside an Erlang binary literal unescaped.
var erlangSafe = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// take returns a virtual host of its own on which user has every right.
func (p *vhostPool) take(user string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) == 0 {
		names := make([]string, vhostBatch)
		for i := range names {
			names[i] = "capsule-e2e-" + uuid.NewString()[:8]
		}
		if err := addVhosts(user, names); err != nil {
			return "", err
		}
		p.free = names
	}
	v := p.free[0]
	p.free = p.free[1:]
	return v, nil
}

// release gives a virtual host back: it is deleted (its queues with it)
// with the next vhostBatch given back, or at the end of the tests.
func (p *vhostPool) release(vhost string) {
	p.mu.Lock()
	p.dead = append(p.dead, vhost)
	var batch []string
	if len(p.dead) >= vhostBatch {
		batch, p.dead = p.dead, nil
	}
	p.mu.Unlock()
	deleteVhosts(batch)
}

// drain deletes every virtual host the pool made and still holds.
func (p *vhostPool) drain() {
	p.mu.Lock()
	batch := append(p.free, p.dead...)
	p.free, p.dead = nil, nil
	p.mu.Unlock()
	deleteVhosts(batch)
}

// erlangList is names as an Erlang list of binaries.
func erlangList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = `<<"` + n + `">>`
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func addVhosts(user string, names []string) error {
	if erlangSafe.MatchString(user) {
		expr := fmt.Sprintf(`U = <<"%s">>, A = <<"capsule-e2e">>, `+
			`[begin ok = rabbit_vhost:add(V, A), `+
			`ok = rabbit_auth_backend_internal:set_permissions(U, V, <<".*">>, <<".*">>, <<".*">>, A) end || V <- %s], ok.`,
			user, erlangList(names))
		if out, err := exec.Command("rabbitmqctl", "eval", expr).CombinedOutput(); err == nil && strings.TrimSpace(string(out)) == "ok" {
			return nil
		}
	}
	for _, v := range names {
		for _, args := range [][]string{{"add_vhost", v}, {"set_permissions", "-p", v, user, ".*", ".*", ".*"}} {
			if out, err := exec.Command("rabbitmqctl", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("rabbitmqctl %v: %v\n%s", args, err, out)
			}
		}
	}
	return nil
}

func deleteVhosts(names []string) {
	if len(names) == 0 {
		return
	}
	expr := fmt.Sprintf(`[rabbit_vhost:delete(V, <<"capsule-e2e">>) || V <- %s], ok.`, erlangList(names))
	if err := exec.Command("rabbitmqctl", "eval", expr).Run(); err == nil {
		return
	}
	for _, v := range names {
		_ = exec.Command("rabbitmqctl", "delete_vhost", v).Run()
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	rabbitVhosts.drain()
	os.Exit(code)
}
