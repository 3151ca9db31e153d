package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// testIdentityCLI drives Keystone with the real openstack client as an
// operator and a user of another domain would: a domain holding projects
// (tags, a parent), a user with a description and options who changes
// her own password, a group with a role grant, an inherited grant on the
// domain, an implied role, role assignment list --effective --names, an
// application credential login, and a system-scoped admin token.
func testIdentityCLI(t *testing.T, c *cloud) {
	admin := c.openstack(t, "admin", c.adminPass, "admin")
	admin.run("domain", "create", "--description", "CLI domain", "cli-dom")
	admin.run("project", "create", "--domain", "cli-dom", "--tag", "alpha", "--tag", "beta", "cli-parent")
	admin.run("project", "create", "--domain", "cli-dom", "--parent", "cli-parent", "cli-child")
	var projects []map[string]any
	admin.json(&projects, "project", "list", "--domain", "cli-dom", "--tags", "alpha")
	if len(projects) != 1 || projects[0]["Name"] != "cli-parent" {
		t.Fatalf("projects tagged alpha: %v", projects)
	}
	var child map[string]any
	admin.json(&child, "project", "show", "--domain", "cli-dom", "cli-child")
	var parent map[string]any
	admin.json(&parent, "project", "show", "--domain", "cli-dom", "cli-parent")
	if child["parent_id"] != parent["id"] {
		t.Fatalf("cli-child's parent %v, cli-parent %v", child["parent_id"], parent["id"])
	}
	admin.run("user", "create", "--domain", "cli-dom", "--password", "first-pw", "--description", "a CLI user",
		"--ignore-lockout-failure-attempts", "cli-user")
	var user map[string]any
	admin.json(&user, "user", "show", "--domain", "cli-dom", "cli-user")
	if user["description"] != "a CLI user" || !strings.Contains(stringOf(user["options"]), "ignore_lockout_failure_attempts") {
		t.Fatalf("user show: %v", user)
	}
	admin.run("group", "create", "--domain", "cli-dom", "cli-grp")
	admin.run("group", "add", "user", "--group-domain", "cli-dom", "--user-domain", "cli-dom", "cli-grp", "cli-user")
	admin.run("role", "add", "--group", "cli-grp", "--group-domain", "cli-dom", "--project", "cli-parent",
		"--project-domain", "cli-dom", "member")
	// Inherited on the domain: reader on every project of cli-dom.
	admin.run("role", "add", "--user", "cli-user", "--user-domain", "cli-dom", "--domain", "cli-dom", "--inherited", "reader")
	admin.run("role", "create", "cli-auditor")
	admin.run("implied", "role", "create", "cli-auditor", "--implied-role", "reader")
	var rules []map[string]any
	admin.json(&rules, "implied", "role", "list")
	if len(rules) != 1 || rules[0]["Prior Role Name"] != "cli-auditor" || rules[0]["Implied Role Name"] != "reader" {
		t.Fatalf("implied role list: %v", rules)
	}
	admin.run("role", "add", "--user", "cli-user", "--user-domain", "cli-dom", "--project", "cli-child",
		"--project-domain", "cli-dom", "cli-auditor")

	var eff []map[string]any
	admin.json(&eff, "role", "assignment", "list", "--effective", "--names", "--user", "cli-user", "--user-domain", "cli-dom")
	got := map[string]bool{}
	for _, a := range eff {
		got[stringOf(a["Role"])+"@"+stringOf(a["Project"])] = true
	}
	for _, want := range []string{"member@cli-parent@cli-dom", "reader@cli-parent@cli-dom", "reader@cli-child@cli-dom",
		"cli-auditor@cli-child@cli-dom"} {
		if !got[want] {
			t.Errorf("effective assignments lack %s: %v", want, eff)
		}
	}
	var inh []map[string]any
	admin.json(&inh, "role", "assignment", "list", "--inherited", "--names", "--user", "cli-user", "--user-domain", "cli-dom")
	if len(inh) != 1 || inh[0]["Domain"] != "cli-dom" || inh[0]["Inherited"] != true {
		t.Errorf("inherited assignments: %v", inh)
	}

	// The user, in her own domain: password change, then the roles she
	// holds through the group, the inheritance and the implied role.
	as := func(project, pass string) *openstackCLI {
		o := c.openstack(t, "cli-user", pass, project)
		o.env = append(o.env, "OS_USER_DOMAIN_NAME=cli-dom", "OS_PROJECT_DOMAIN_NAME=cli-dom")
		return o
	}
	as("cli-parent", "first-pw").run("user", "password", "set", "--original-password", "first-pw", "--password", "second-pw")
	if _, err := as("cli-parent", "first-pw").try("token", "issue"); err == nil {
		t.Errorf("the old password still logs in")
	}
	var tok map[string]any
	as("cli-child", "second-pw").json(&tok, "token", "issue")
	if tok["project_id"] != child["id"] {
		t.Fatalf("token on cli-child: %v", tok)
	}
	var ac map[string]any
	as("cli-parent", "second-pw").json(&ac, "application", "credential", "create", "--secret", "cli-ac-secret", "cli-ac")
	acEnv := append(os.Environ(), "OS_AUTH_URL="+c.authURL(), "OS_AUTH_TYPE=v3applicationcredential",
		"OS_APPLICATION_CREDENTIAL_ID="+stringOf(ac["id"]), "OS_APPLICATION_CREDENTIAL_SECRET=cli-ac-secret",
		"OS_IDENTITY_API_VERSION=3", "OS_REGION_NAME=RegionOne", "OS_INTERFACE=public")
	acCLI := &openstackCLI{t: t, env: acEnv}
	var acTok map[string]any
	acCLI.json(&acTok, "token", "issue")
	if acTok["project_id"] != parent["id"] {
		t.Fatalf("application credential token: %v", acTok)
	}
	as("cli-parent", "second-pw").run("application", "credential", "delete", "cli-ac")
	if _, err := acCLI.try("token", "issue"); err == nil {
		t.Errorf("a deleted application credential still logs in")
	}

	// Credentials: an ec2 one made by the operator for cli-user (its id
	// the access key's hash), read by her, changed, deleted; then OS-EC2
	// credentials she makes for herself.
	uid, pid := stringOf(user["id"]), stringOf(parent["id"])
	blob := `{"access":"cli-access","secret":"cli-secret"}`
	var cred map[string]any
	admin.json(&cred, "credential", "create", uid, blob, "--type", "ec2", "--project", pid)
	sum := sha256.Sum256([]byte("cli-access"))
	credID := hex.EncodeToString(sum[:])
	if cred["id"] != credID || cred["blob"] != blob || cred["project_id"] != pid || cred["user_id"] != uid {
		t.Fatalf("credential create: %v", cred)
	}
	var creds []map[string]any
	admin.json(&creds, "credential", "list", "--user", uid, "--type", "ec2")
	if len(creds) != 1 || creds[0]["ID"] != credID {
		t.Fatalf("credential list: %v", creds)
	}
	blob2 := `{"access":"cli-access","secret":"cli-secret-2"}`
	admin.run("credential", "set", "--user", uid, "--type", "ec2", "--data", blob2, "--project", pid, credID)
	var shown map[string]any
	as("cli-parent", "second-pw").json(&shown, "credential", "show", credID)
	if shown["blob"] != blob2 {
		t.Fatalf("credential show by its user after set: %v", shown)
	}
	as("cli-parent", "second-pw").run("credential", "delete", credID)
	if out, err := admin.try("credential", "show", credID); err == nil {
		t.Errorf("a deleted credential is still shown: %s", out)
	}
	var ec2 map[string]any
	as("cli-parent", "second-pw").json(&ec2, "ec2", "credentials", "create")
	access := stringOf(ec2["access"])
	if access == "" || stringOf(ec2["secret"]) == "" || ec2["project_id"] != pid {
		t.Fatalf("ec2 credentials create: %v", ec2)
	}
	var ec2s []map[string]any
	as("cli-parent", "second-pw").json(&ec2s, "ec2", "credentials", "list")
	if len(ec2s) != 1 || ec2s[0]["Access"] != access {
		t.Fatalf("ec2 credentials list: %v", ec2s)
	}
	as("cli-parent", "second-pw").run("ec2", "credentials", "show", access)
	as("cli-parent", "second-pw").run("ec2", "credentials", "delete", access)
	as("cli-parent", "second-pw").json(&ec2s, "ec2", "credentials", "list")
	if len(ec2s) != 0 {
		t.Fatalf("ec2 credentials list after delete: %v", ec2s)
	}

	// A system-scoped administrator manages identity without a project.
	admin.run("role", "add", "--system", "all", "--user", "admin", "--user-domain", "Default", "admin")
	sys := &openstackCLI{t: t, env: append(os.Environ(), "OS_AUTH_URL="+c.authURL(), "OS_USERNAME=admin",
		"OS_PASSWORD="+c.adminPass, "OS_USER_DOMAIN_NAME=Default", "OS_SYSTEM_SCOPE=all", "OS_IDENTITY_API_VERSION=3",
		"OS_REGION_NAME=RegionOne", "OS_INTERFACE=public")}
	var users []map[string]any
	sys.json(&users, "user", "list", "--domain", "cli-dom")
	if len(users) != 1 || users[0]["Name"] != "cli-user" {
		t.Fatalf("system-scoped user list: %v", users)
	}
	var sysAssign []map[string]any
	admin.json(&sysAssign, "role", "assignment", "list", "--system", "all", "--names")
	if len(sysAssign) != 1 || sysAssign[0]["System"] != "all" || sysAssign[0]["Role"] != "admin" {
		t.Errorf("system assignments: %v", sysAssign)
	}
	// Compute is project-scoped: a system token has no project there.
	if out, err := sys.try("server", "list"); err == nil {
		t.Errorf("server list with a system-scoped token succeeded: %s", out)
	}
	admin.run("role", "remove", "--system", "all", "--user", "admin", "--user-domain", "Default", "admin")

	// What the operator made, read back by id with --debug: no request
	// answered 4xx (a name would first be tried as an id, and 404, in
	// Keystone as here).
	uid = stringOf(user["id"])
	for _, args := range [][]string{
		{"project", "show", stringOf(child["id"])},
		{"project", "list", "--tags", "alpha"},
		{"user", "show", uid},
		{"role", "assignment", "list", "--effective", "--names", "--user", uid},
		{"role", "assignment", "list", "--inherited", "--user", uid},
		{"implied", "role", "list"},
		{"domain", "list"},
		{"group", "list", "--user", uid},
	} {
		admin.debugClean(args...)
	}
}

func stringOf(v any) string {
	s, _ := v.(string)
	if s == "" && v != nil {
		b, _ := json.Marshal(v)
		return string(b)
	}
	return s
}
