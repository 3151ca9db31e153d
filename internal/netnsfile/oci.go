package netnsfile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// runc's global options that take a value (runc --help, 1.1): the
// subcommand is the first argument that is neither one of them, nor a
// flag, nor a flag's value.
var runcGlobalValue = map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}

// runc create's (and run's) options that take a value.
var runcCreateValue = map[string]bool{"--bundle": true, "-b": true, "--console-socket": true, "--pid-file": true,
	"--preserve-fds": true, "--pidfd-socket": true}

// CreateArgs finds, in the arguments of a runc invocation, a `create` (or
// `run`) and returns its bundle directory (the working directory's "."
// when none is given) and container id. ok is false for every other
// subcommand, which the wrapper passes through untouched.
func CreateArgs(args []string) (bundle, id string, ok bool) {
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			break
		}
		if runcGlobalValue[a] {
			i++
		}
	}
	if i >= len(args) || (args[i] != "create" && args[i] != "run") {
		return "", "", false
	}
	bundle = "."
	for j := i + 1; j < len(args); j++ {
		a := args[j]
		name, val, hasVal := strings.Cut(a, "=")
		switch {
		case (name == "--bundle" || name == "-b") && hasVal:
			bundle = val
		case a == "--bundle" || a == "-b":
			if j+1 < len(args) {
				bundle = args[j+1]
			}
			j++
		case runcCreateValue[a]:
			j++
		case strings.HasPrefix(a, "-"):
		default:
			id = a
		}
	}
	return bundle, id, id != ""
}

// SetNetworkNamespace rewrites the OCI config.json in bundle so that the
// container joins the network namespace at nsPath, and drops Docker's
// libnetwork-setkey hook (dropSetKeyHook). Every other field is kept as
// it is (numbers too: they are not round-tripped through floats).
func SetNetworkNamespace(bundle, nsPath string) error {
	file := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var spec map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&spec); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	linux, _ := spec["linux"].(map[string]any)
	if linux == nil {
		return fmt.Errorf("%s: no linux section", file)
	}
	nss, _ := linux["namespaces"].([]any)
	found := false
	for _, n := range nss {
		m, _ := n.(map[string]any)
		if m != nil && m["type"] == "network" {
			m["path"] = nsPath
			found = true
		}
	}
	if !found {
		nss = append(nss, map[string]any{"type": "network", "path": nsPath})
	}
	linux["namespaces"] = nss
	dropSetKeyHook(spec)
	out, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	st, err := os.Stat(file)
	if err != nil {
		return err
	}
	tmp := file + ".capsule"
	if err := os.WriteFile(tmp, out, st.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// setKeyHook is the argv[0] of dockerd's hook (dockerd re-executed
// as /proc/PID/exe libnetwork-setkey ...), which Docker adds to every
// container whose network namespace it has not made yet.
const setKeyHook = "libnetwork-setkey"

// dropSetKeyHook removes Docker's libnetwork-setkey hooks from spec. The
// hook runs dockerd's binary once per container start, which then hands
// the namespace to dockerd to bind-mount under its netns directory and to
// set its loopback up: a start's largest cost after runc's own on a busy
// host. A container joined to the agent's namespace needs neither (the
// namespace is the agent's file, its loopback is up since Make; a
// "none" container has no endpoint for dockerd to plumb), and dockerd
// does not wait for the hook: without it its sandbox keeps no namespace,
// which its stop and remove then have nothing to release of.
func dropSetKeyHook(spec map[string]any) {
	hooks, _ := spec["hooks"].(map[string]any)
	if hooks == nil {
		return
	}
	for _, kind := range []string{"prestart", "createRuntime"} {
		list, ok := hooks[kind].([]any)
		if !ok {
			continue
		}
		kept := list[:0]
		for _, h := range list {
			m, _ := h.(map[string]any)
			args, _ := m["args"].([]any)
			if len(args) > 0 && args[0] == setKeyHook {
				continue
			}
			kept = append(kept, h)
		}
		if len(kept) == 0 {
			delete(hooks, kind)
		} else {
			hooks[kind] = kept
		}
	}
	if len(hooks) == 0 {
		delete(spec, "hooks")
	}
}
