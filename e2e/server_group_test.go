package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestServerGroupAntiAffinityCLI drives server groups with the real
// openstack client on a two-host cloud: two members of an anti-affinity
// group land on different hosts, a third finds no valid host, and the
// group shows, lists and deletes.
func TestServerGroupAntiAffinityCLI(t *testing.T) {
	t.Parallel()
	c := startCloud(t, twoHosts)
	demoCLI, adminCLI := c.openstack(t, "demo", c.demoPass, "demo"), c.openstack(t, "admin", c.adminPass, "admin")
	jsonMap := func(o *openstackCLI) func(args ...string) map[string]any {
		return func(args ...string) map[string]any {
			t.Helper()
			var m map[string]any
			o.json(&m, args...)
			return m
		}
	}
	demo, asAdmin := jsonMap(demoCLI), jsonMap(adminCLI)

	g := demo("server", "group", "create", "--policy", "anti-affinity", "g1")
	gid := fmt.Sprint(g["id"])
	if !strings.Contains(fmt.Sprint(g["policy"], g["policies"]), "anti-affinity") {
		t.Errorf("server group create = %v", g)
	}

	hosts := map[string]string{}
	var ids []string
	for _, name := range []string{"ga-1", "ga-2"} {
		s := demo("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--hint", "group="+gid, "--wait", name)
		id := fmt.Sprint(s["id"])
		ids = append(ids, id)
		shown := asAdmin("server", "show", id)
		if shown["status"] != "ACTIVE" {
			t.Fatalf("%s: status %v", name, shown["status"])
		}
		hosts[name] = fmt.Sprint(shown["OS-EXT-SRV-ATTR:host"])
	}
	if hosts["ga-1"] == hosts["ga-2"] || !strings.HasPrefix(hosts["ga-1"], c.host) || !strings.HasPrefix(hosts["ga-2"], c.host) {
		t.Fatalf("anti-affinity members on %v, want one on each of %s and %s", hosts, c.hosts[0].name, c.hosts[1].name)
	}

	// A third member has no host left: --wait reports the failure (OSC
	// 6.0 exits 0 after printing it), the server is in ERROR with Nova's
	// fault.
	out, err := demoCLI.try("server", "create", "--image", "busybox", "--flavor", "m1.tiny",
		"--hint", "group="+gid, "--wait", "ga-3")
	if err == nil && !strings.Contains(out, "Error creating server") {
		t.Fatalf("a third anti-affinity member on two hosts was created:\n%s", out)
	}
	third := demo("server", "show", "ga-3")
	if third["status"] != "ERROR" || !strings.Contains(fmt.Sprint(third["fault"]), "No valid host") {
		t.Errorf("ga-3: status %v fault %v, want ERROR with No valid host", third["status"], third["fault"])
	}

	shown := demo("server", "group", "show", gid)
	for _, id := range ids {
		if !strings.Contains(fmt.Sprint(shown["members"]), id) {
			t.Errorf("server group show members %v lacks %s", shown["members"], id)
		}
	}
	listOut, err := demoCLI.try("server", "group", "list", "-f", "json")
	if err != nil || !strings.Contains(listOut, gid) {
		t.Errorf("server group list (%v): %s", err, listOut)
	}

	// Deleting a member frees its place: a new member may take it.
	if out, err := demoCLI.try("server", "delete", "--wait", "ga-3", ids[0]); err != nil {
		t.Fatalf("server delete: %v\n%s", err, out)
	}
	s := demo("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--hint", "group="+gid, "--wait", "ga-4")
	if h := asAdmin("server", "show", fmt.Sprint(s["id"]))["OS-EXT-SRV-ATTR:host"]; h != hosts["ga-1"] {
		t.Errorf("ga-4 on %v, want the host ga-1 left (%s)", h, hosts["ga-1"])
	}

	if out, err := demoCLI.try("server", "group", "delete", gid); err != nil {
		t.Fatalf("server group delete: %v\n%s", err, out)
	}
	listOut, err = demoCLI.try("server", "group", "list", "-f", "value")
	if err != nil || strings.Contains(listOut, gid) {
		t.Errorf("server group list after delete (%v): %q", err, listOut)
	}
}
