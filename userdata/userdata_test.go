package userdata

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const cloudCfg = `#cloud-config
hostname: web-7
users:
  - default
  - name: alice
    gecos: Alice
    sudo: ALL=(ALL) NOPASSWD:ALL
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3Nza alice@laptop
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3Nzb root@laptop
write_files:
  - path: /etc/app/conf.txt
    content: |
      it's "quoted" $HOME
    permissions: '0640'
  - path: /etc/app/bin.dat
    encoding: b64
    content: aGVsbG8=
    permissions: 0600
runcmd:
  - echo ran > /tmp/runcmd
  - [sh, -c, 'touch "$T/with space"']
bootcmd:
  - echo boot >> /tmp/bootcmd
packages: [nginx]
`

func TestShellScriptRunsOnce(t *testing.T) {
	p := Parse([]byte("#!/bin/bash\necho hi\n"))
	if p.Once != "#!/bin/bash\necho hi\n" || p.Boot != "" || p.Hostname != "" {
		t.Errorf("plan = %+v", p)
	}
	if p := Parse(nil); p != (Plan{}) {
		t.Errorf("no user data: %+v", p)
	}
}

func TestUnsupportedFormatsAreLogged(t *testing.T) {
	for in, want := range map[string]string{
		"#include\nhttp://x":                "#include",
		"\x1f\x8b\x08rest":                  "gzip",
		"Content-Type: multipart/mixed\n\n": "multipart MIME",
		"just text":                         "text",
	} {
		p := Parse([]byte(in))
		if !strings.Contains(p.Once, "capsule-init: user data of type") || !strings.Contains(p.Once, want) {
			t.Errorf("%q: once = %q", in, p.Once)
		}
	}
	if p := Parse([]byte("#cloud-config\n: : bad: [")); !strings.Contains(p.Once, "not valid YAML") {
		t.Errorf("bad YAML: %q", p.Once)
	}
}

// The generated scripts, run by a real sh in a scratch root (paths
// rewritten into it), do what the cloud-config asks: a file with its
// content and mode, a user with its key, root's key, the commands.
func TestCloudConfigApplied(t *testing.T) {
	p := Parse([]byte(cloudCfg))
	if p.Hostname != "web-7" {
		t.Errorf("hostname = %q", p.Hostname)
	}
	if !strings.Contains(p.Boot, "echo boot >> /tmp/bootcmd") || strings.Contains(p.Once, "bootcmd") {
		t.Errorf("bootcmd: boot %q", p.Boot)
	}
	for _, want := range []string{"packages is not supported", "users: sudo (user alice) is not supported"} {
		if !strings.Contains(p.Once, want) {
			t.Errorf("once lacks %q", want)
		}
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	root := t.TempDir()
	for _, d := range []string{"etc", "tmp", "root", "home"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644)
	p = cloudConfig([]byte(strings.ReplaceAll(cloudCfg, "/tmp/", "$T/")), root)
	s := strings.ReplaceAll(p.Once, "chown ", ": chown ") // not root in the test
	os.Setenv("T", filepath.Join(root, "tmp"))
	defer os.Unsetenv("T")
	out, err := exec.Command(sh, "-c", s).CombinedOutput()
	if err != nil {
		t.Fatalf("once script: %v\n%s\n%s", err, out, s)
	}
	check := func(path, want string, mode os.FileMode) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q (%v), want %q", path, b, err, want)
			return
		}
		if fi, _ := os.Stat(filepath.Join(root, path)); mode != 0 && fi.Mode().Perm() != mode {
			t.Errorf("%s mode %o, want %o", path, fi.Mode().Perm(), mode)
		}
	}
	check("etc/app/conf.txt", "it's \"quoted\" $HOME\n", 0o640)
	check("etc/app/bin.dat", "hello", 0o600)
	check("tmp/runcmd", "ran\n", 0)
	check("tmp/with space", "", 0)
	check("etc/hostname", "web-7\n", 0)
	check("home/alice/.ssh/authorized_keys", "ssh-ed25519 AAAAC3Nza alice@laptop\n", 0o600)
	check("root/.ssh/authorized_keys", "ssh-ed25519 AAAAC3Nzb root@laptop\n", 0o600)
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !strings.Contains(string(passwd), "alice:x:1000:1000:Alice:/home/alice:/bin/sh") {
		t.Errorf("passwd = %s", passwd)
	}
	if !strings.Contains(string(out), "capsule-init: cloud-config: packages is not supported; ignored") {
		t.Errorf("console lacks the unsupported key: %s", out)
	}
}
