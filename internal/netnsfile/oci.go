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
// container joins the network namespace at nsPath. Every other field is
// kept as it is (numbers too: they are not round-tripped through floats).
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
