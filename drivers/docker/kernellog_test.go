package docker_test

import (
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// TestServerCannotReadTheKernelLog: only the host reads the kernel ring
// buffer (the lesson: host and container rsyslog both read it and the logs
// came out shuffled). Inside a server, dmesg (the syslog syscall: no
// CAP_SYSLOG, and Docker's seccomp profile refuses it), /dev/kmsg (not in
// the container's /dev) and /proc/kmsg (masked) all fail, and the host's
// syslog files are not in the server's filesystem.
func TestServerCannotReadTheKernelLog(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := drivertest.Spec(image)
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	name := docker.ContainerName(spec.ID)
	for _, c := range []struct{ what, cmd string }{
		{"dmesg", "dmesg"},
		{"/dev/kmsg", "head -c 64 /dev/kmsg"},
		{"/proc/kmsg", "head -c 64 /proc/kmsg"},
		{"host syslog", "cat /var/log/syslog /var/log/kern.log /var/log/messages"},
	} {
		code, out, err := execIn(ctx, d.Client(), name, "sh", "-c", c.cmd)
		if err != nil {
			t.Fatalf("exec %s: %v", c.what, err)
		}
		if code == 0 {
			t.Errorf("%s is readable inside a server (exit 0): %q", c.what, firstLine(out))
		}
	}
	// The control: the same exec does work for an ordinary file, so the
	// failures above are the kernel log being out of reach.
	if code, out, err := execIn(ctx, d.Client(), name, "sh", "-c", "head -c 16 /etc/passwd"); err != nil || code != 0 || out == "" {
		t.Fatalf("control exec failed: %d %v %q", code, err, out)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
