package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestKeypairCLI drives keypairs with the real openstack client: a
// generated one (the private key printed), an imported one, list and
// show, a server booted with the imported key that finds it in root's
// authorized_keys, and the deletes.
func TestKeypairCLI(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	osc := c.openstack(t, "demo", c.demoPass, "demo")
	cli, run, runJSON := osc.try, osc.run, osc.json

	// Generated: the private key is printed, and it is a usable ssh key.
	priv := run("keypair", "create", "k1")
	if !strings.HasPrefix(priv, "-----BEGIN RSA PRIVATE KEY-----") {
		t.Fatalf("keypair create k1 printed %q, want the private key", priv)
	}
	if _, err := ssh.ParsePrivateKey([]byte(priv)); err != nil {
		t.Errorf("printed private key does not parse: %v", err)
	}

	// Imported from a file, as a user's ~/.ssh/id_ed25519.pub.
	pubKey, err := newPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	pubLine := string(ssh.MarshalAuthorizedKey(pubKey)) // "ssh-ed25519 AAAA...\n"
	pubLine = strings.TrimSuffix(pubLine, "\n") + " me@laptop\n"
	pubFile := filepath.Join(t.TempDir(), "id_ed25519.pub")
	if err := os.WriteFile(pubFile, []byte(pubLine), 0o644); err != nil {
		t.Fatal(err)
	}
	run("keypair", "create", "--public-key", pubFile, "k2")

	var list []map[string]any
	runJSON(&list, "keypair", "list")
	fps := map[string]any{}
	for _, kp := range list {
		fps[kp["Name"].(string)] = kp["Fingerprint"]
	}
	wantFP := ssh.FingerprintLegacyMD5(pubKey)
	if len(list) != 2 || fps["k1"] == nil || fps["k2"] != wantFP {
		t.Errorf("keypair list = %v, want k1 and k2 (fingerprint %s)", list, wantFP)
	}
	var show map[string]any
	runJSON(&show, "keypair", "show", "k2")
	if show["name"] != "k2" || show["fingerprint"] != wantFP || show["type"] != "ssh" {
		t.Errorf("keypair show k2 = %v", show)
	}
	if got := run("keypair", "show", "--public-key", "k2"); strings.TrimSpace(got) != strings.TrimSpace(pubLine) {
		t.Errorf("keypair show --public-key k2 = %q, want %q", got, pubLine)
	}

	// A server booted with k2 has it as root's authorized_keys.
	run("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--key-name", "k2", "--wait", "key-vm")
	var srv map[string]any
	runJSON(&srv, "server", "show", "key-vm")
	if srv["status"] != "ACTIVE" || srv["key_name"] != "k2" {
		t.Fatalf("server show = %v, want ACTIVE with key_name k2", srv)
	}
	ctr := "capsule-" + srv["id"].(string)
	if out, err := c.docker("exec", ctr, "cat", "/root/.ssh/authorized_keys"); err != nil || out+"\n" != pubLine {
		t.Errorf("authorized_keys in the server = %q, %v; want %q", out, err, pubLine)
	}
	if out, err := c.docker("exec", ctr, "stat", "-c", "%a %u %g", "/root/.ssh", "/root/.ssh/authorized_keys"); err != nil || out != "700 0 0\n600 0 0" {
		t.Errorf("modes in the server = %q, %v; want 700 0 0 and 600 0 0", out, err)
	}

	// Deleting the keypair does not change the server.
	run("keypair", "delete", "k2")
	runJSON(&srv, "server", "show", "key-vm")
	if srv["key_name"] != "k2" {
		t.Errorf("key_name after the keypair's delete = %v, want k2", srv["key_name"])
	}
	if out, err := c.docker("exec", ctr, "cat", "/root/.ssh/authorized_keys"); err != nil || out+"\n" != pubLine {
		t.Errorf("authorized_keys after the keypair's delete = %q, %v", out, err)
	}
	// A deleted keypair boots nothing.
	if out, err := cli("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--key-name", "k2", "bad-vm"); err == nil {
		t.Errorf("server create with a deleted keypair succeeded: %s", out)
	}
	run("keypair", "delete", "k1")
	if out := run("keypair", "list", "-f", "value"); strings.TrimSpace(out) != "" {
		t.Errorf("keypair list after the deletes = %q", out)
	}
	if out, err := cli("keypair", "delete", "k1"); err == nil {
		t.Errorf("deleting a deleted keypair succeeded: %s", out)
	}
	run("server", "delete", "--wait", "key-vm")
}

func newPublicKey() (ssh.PublicKey, error) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewPublicKey(pub)
}
