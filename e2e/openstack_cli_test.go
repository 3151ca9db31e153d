package e2e

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// openstackCLI runs the Debian openstack client against a test cloud as
// one user in one project, the way a user at a shell would.
type openstackCLI struct {
	t   *testing.T
	env []string
}

// openstack returns the CLI of user (password pass) scoped to project; the
// test fails at once when python3-openstackclient is not installed.
func (c *cloud) openstack(t *testing.T, user, pass, project string) *openstackCLI {
	t.Helper()
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack CLI (python3-openstackclient) is required: %v", err)
	}
	return &openstackCLI{t: t, env: c.env(user, pass, project)}
}

// try runs one command and returns its combined output and error.
func (o *openstackCLI) try(args ...string) (string, error) {
	cmd := exec.Command("openstack", args...)
	cmd.Env = o.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run runs one command and fails the test when it fails.
func (o *openstackCLI) run(args ...string) string {
	o.t.Helper()
	out, err := o.try(args...)
	if err != nil {
		o.t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// json runs one command with -f json and decodes its output into v.
func (o *openstackCLI) json(v any, args ...string) {
	o.t.Helper()
	out := o.run(append(args, "-f", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		o.t.Fatalf("openstack %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// debugExchange is a request ("REQ: curl ... -X METHOD URL") or an answer
// ("RESP: [status]") in keystoneauth's --debug log.
var debugExchange = regexp.MustCompile(`REQ: curl .* -X (\w+) (\S+)|RESP: \[(\d{3})\]`)

// debugClean runs one command with --debug and fails the test when any
// of its requests was answered 4xx or 5xx: a request the client had to
// retry or work around. One 404 is the contract, not a workaround: the
// CLI asks Neutron for an extension by name (GET /v2.0/extensions/
// Availability Zone) to learn whether it exists, and Neutron answers 404
// for one it lacks.
func (o *openstackCLI) debugClean(args ...string) {
	o.t.Helper()
	out := o.run(append([]string{"--debug"}, args...)...)
	n, req := 0, ""
	for _, m := range debugExchange.FindAllStringSubmatch(out, -1) {
		if m[3] == "" {
			req = m[1] + " " + m[2]
			continue
		}
		n++
		if m[3] == "404" && strings.HasPrefix(req, "GET ") && strings.Contains(req, "/v2.0/extensions/") {
			continue
		}
		if m[3][0] == '4' || m[3][0] == '5' {
			o.t.Errorf("openstack %s: %s answered %s:\n%s", strings.Join(args, " "), req, m[3], out)
		}
	}
	if n == 0 {
		o.t.Errorf("openstack --debug %s logged no response", strings.Join(args, " "))
	}
}
