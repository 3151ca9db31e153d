package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"

	"github.com/capsule-cloud/capsule/internal/testenv"
	capreg "github.com/capsule-cloud/capsule/registry"
)

// authRegistry is a private registry of the test's own that requires a
// login (htpasswd, bcrypt), as the all-in-one's does: migrations and
// snapshots of a cloud using it prove the agents and the control plane
// send their credentials. The test can restart it (a registry outage).
type authRegistry struct {
	addr, user, pass string
	dir, config      string
	cmd              *exec.Cmd
}

// startAuthRegistry runs Debian's docker-registry on a free loopback port
// with storage and htpasswd under the test's temporary directory.
func startAuthRegistry(t *testing.T) *authRegistry {
	t.Helper()
	_, err := exec.LookPath("docker-registry")
	testenv.Require(t, err == nil, "docker-registry not installed: %v", err)
	r := &authRegistry{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), user: "capsule",
		pass: "reg-" + uuid.NewString()[:12], dir: t.TempDir()}
	// The cheapest cost: the registry checks the password on every
	// request of a pull or push (the all-in-one's keeps the default).
	hash, err := bcrypt.GenerateFromPassword([]byte(r.pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(r.dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(r.user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.config = filepath.Join(r.dir, "registry.yml")
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
auth:
  htpasswd:
    realm: capsule-test
    path: %s
`, filepath.Join(r.dir, "data"), r.addr, htpasswd)
	if err := os.WriteFile(r.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start(t)
	t.Cleanup(r.stop)
	return r
}

func (r *authRegistry) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(r.dir, "registry.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	r.cmd = exec.Command("docker-registry", "serve", r.config)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start registry: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if code, _ := r.status(false); code == http.StatusUnauthorized {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("registry on %s did not answer 401 to an anonymous /v2/ within 20s", r.addr)
}

func (r *authRegistry) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// restart stops the registry and starts it again at once (its data stays).
func (r *authRegistry) restart(t *testing.T) {
	t.Helper()
	r.stop()
	r.start(t)
}

// status asks the registry's API version check (/v2/), logged in or
// not, and returns the HTTP status.
func (r *authRegistry) status(login bool) (int, error) {
	c := &capreg.Client{Address: r.addr, HTTP: &http.Client{Timeout: 3 * time.Second}}
	if login {
		c.Username, c.Password = r.user, r.pass
	}
	err := c.Ping(context.Background())
	var se *capreg.StatusError
	if errors.As(err, &se) {
		return se.Code, nil
	}
	if err != nil {
		return 0, err
	}
	return http.StatusOK, nil
}

// tags lists the tags of repo ("" = none; a repository never pushed to
// has none).
func (r *authRegistry) tags(t *testing.T, repo string) []string {
	t.Helper()
	tags, err := (&capreg.Client{Address: r.addr, Username: r.user, Password: r.pass}).Tags(context.Background(), repo)
	if err != nil {
		t.Fatalf("list tags of %s: %v", repo, err)
	}
	return tags
}

// yaml is the registry section of a Capsule config using this registry.
func (r *authRegistry) yaml() string {
	return fmt.Sprintf("registry:\n  address: %s\n  username: %s\n  password: %q\n", r.addr, r.user, r.pass)
}

// withRegistry makes the cloud's control plane and agents use reg
// (snapshots, migrations) with its login.
func withRegistry(reg *authRegistry) cloudOption {
	return func(t *testing.T, c *cloud) { c.registry = reg.yaml() }
}

// TestAuthRegistryRefusesAnonymous: the test registry, like the
// all-in-one's, wants a login; a wrong one is refused too.
func TestAuthRegistryRefusesAnonymous(t *testing.T) {
	t.Parallel()
	reg := startAuthRegistry(t)
	if code, err := reg.status(false); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("anonymous /v2/: %d %v, want 401", code, err)
	}
	if code, err := reg.status(true); err != nil || code != http.StatusOK {
		t.Fatalf("logged-in /v2/: %d %v, want 200", code, err)
	}
	bad := *reg
	bad.pass = "wrong"
	if code, _ := bad.status(true); code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d, want 401", code)
	}
}
