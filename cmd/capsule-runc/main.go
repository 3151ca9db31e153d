// Command capsule-runc is the OCI runtime Capsule registers with the
// dockerds of its compute hosts (dockerd --add-runtime
// capsule=/usr/local/bin/capsule-runc). A networked server is one
// container created with network mode "none" and this runtime: at `runc
// create` the wrapper points the container's network namespace at the one
// the agent made and plumbed for the server, recorded by container id in
// netnsfile.MapDir, then runs the real runc. Every other subcommand (and
// every argument) goes to runc untouched.
//
// A container of this runtime with no namespace recorded does not start:
// it would run without its network.
//
// deploy/lib.sh installs this program as capsule-runc-join beside
// capsule-runc.sh, installed as capsule-runc, which runs it for `runc
// create` only and runc itself for the shim's other calls (start, kill,
// delete): a Go program's start is about 1.3 ms of CPU per call. Installed
// alone as capsule-runc, this program does both.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/capsule-cloud/capsule/internal/netnsfile"
)

func main() {
	args := os.Args[1:]
	if bundle, id, ok := netnsfile.CreateArgs(args); ok {
		if err := join(bundle, id); err != nil {
			fail(args, err)
		}
	}
	runc, err := realRunc()
	if err != nil {
		fail(args, err)
	}
	if err := syscall.Exec(runc, append([]string{"runc"}, args...), os.Environ()); err != nil {
		fail(args, fmt.Errorf("exec %s: %w", runc, err))
	}
}

// join points container id's bundle at its recorded namespace.
func join(bundle, id string) error {
	ns, err := netnsfile.ReadMap(netnsfile.MapDir, id)
	if err != nil {
		return fmt.Errorf("capsule-runc: no network namespace recorded for container %s (%w); the Capsule agent records it before the server starts: start the server through Capsule", id, err)
	}
	if !netnsfile.IsNamespace(ns) {
		return fmt.Errorf("capsule-runc: the network namespace %s recorded for container %s is gone (host reboot?); the Capsule agent makes it again when it starts the server", ns, id)
	}
	if err := netnsfile.SetNetworkNamespace(bundle, ns); err != nil {
		return fmt.Errorf("capsule-runc: container %s: join network namespace %s: %w", id, ns, err)
	}
	return nil
}

// realRunc is the runc to run: $CAPSULE_RUNC, else runc on PATH, else
// the usual places.
func realRunc() (string, error) {
	if p := os.Getenv("CAPSULE_RUNC"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("runc"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("capsule-runc: runc not found (PATH, /usr/sbin, /usr/bin; or set CAPSULE_RUNC)")
}

// fail reports err where containerd looks for runc's errors (its --log
// file, JSON) and on stderr, and exits 1.
func fail(args []string, err error) {
	fmt.Fprintln(os.Stderr, err)
	if path, jsonLog := logFile(args); path != "" {
		if f, ferr := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); ferr == nil {
			if jsonLog {
				b, _ := json.Marshal(map[string]string{"level": "error", "msg": err.Error(), "time": time.Now().UTC().Format(time.RFC3339Nano)})
				_, _ = f.Write(append(b, '\n'))
			} else {
				_, _ = fmt.Fprintln(f, err)
			}
			f.Close()
		}
	}
	os.Exit(1)
}

// logFile returns runc's --log path and whether --log-format is json.
func logFile(args []string) (string, bool) {
	var path string
	jsonLog := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			break
		}
		name, val, has := strings.Cut(a, "=")
		if !has && i+1 < len(args) && (name == "--log" || name == "--log-format" || name == "--root" || name == "--criu" || name == "--rootless") {
			val = args[i+1]
			i++
		}
		switch name {
		case "--log":
			path = val
		case "--log-format":
			jsonLog = val == "json"
		}
	}
	return path, jsonLog
}
