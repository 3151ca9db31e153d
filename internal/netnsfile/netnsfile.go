// Package netnsfile keeps network namespaces as files: a namespace made in
// process and bind-mounted on a file (as `ip netns add` does), so that it
// outlives every process in it, and the map that tells Capsule's OCI
// runtime wrapper (cmd/capsule-runc) which such namespace a container
// joins: one file per container id in MapDir holding the namespace's path.
//
// It is how a networked server is one container (docs/architecture.md,
// "One container per server"): the agent makes and plumbs the namespace,
// records it for the workload's container id, and the wrapper, at `runc
// create`, points the container's network namespace at it.
package netnsfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// MapDir is where the namespace of each container is recorded: file
// <container id> holds the namespace's path. It is fixed: the wrapper is
// started by containerd's shim with no way to pass it a setting of its own,
// and container ids are unique across dockerds.
const MapDir = "/run/capsule/netns-map"

// nsfsMagic is the statfs type of a namespace file (NSFS_MAGIC).
const nsfsMagic = 0x6e736673

// IsNamespace reports whether path is a bind-mounted namespace (a file
// left by a host reboot is not: the mount went with the kernel).
func IsNamespace(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return int64(st.Type) == nsfsMagic
}

// Make creates a new network namespace with its loopback up and
// bind-mounts it on path (made, with its directory, when missing). An
// existing namespace at path is kept; a stale file (no mount) is replaced.
func Make(path string) error {
	if IsNamespace(path) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("netns %s: mount point: %w", path, err)
	}
	f.Close()
	ns, err := NewHandle()
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("netns %s: %w", path, err)
	}
	defer ns.Close()
	// The handle is a file descriptor of this process; binding it keeps
	// the namespace when the handle closes.
	src := fmt.Sprintf("/proc/self/fd/%d", int(ns))
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("netns %s: bind mount: %w", path, err)
	}
	if err := loopbackUp(ns); err != nil {
		_ = Remove(path)
		return fmt.Errorf("netns %s: %w", path, err)
	}
	return nil
}

// Remove unmounts the namespace at path and removes the file; a missing
// one is fine. The namespace itself ends with the last process in it.
func Remove(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netns %s: unmount: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	return nil
}

// NewHandle makes a new, anonymous network namespace and returns a handle
// to it, leaving the caller's thread where it was (it lives as long as a
// handle or a bind mount holds it).
func NewHandle() (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			c <- result{err: fmt.Errorf("get current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.New() // moves this thread into it
		if err != nil {
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			c <- result{err: fmt.Errorf("new network namespace: %w", err)}
			return
		}
		if err := netns.Set(orig); err != nil {
			ns.Close()
			c <- result{err: fmt.Errorf("return to the original network namespace: %w", err)} // thread dies locked
			return
		}
		runtime.UnlockOSThread()
		c <- result{ns: ns}
	}()
	r := <-c
	return r.ns, r.err
}

func loopbackUp(ns netns.NsHandle) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in namespace: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// validID refuses a container id that is not one file name.
func validID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("netns map: bad container id %q", id)
	}
	return nil
}

// WriteMap records in dir that container id joins the namespace at
// nsPath (atomically: the wrapper never reads half a file).
func WriteMap(dir, id, nsPath string) error {
	if err := validID(id); err != nil {
		return err
	}
	if cur, err := ReadMap(dir, id); err == nil && cur == nsPath {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("netns map: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+id+".*")
	if err != nil {
		return fmt.Errorf("netns map: %w", err)
	}
	_, werr := tmp.WriteString(nsPath + "\n")
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), filepath.Join(dir, id))
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("netns map of container %s: %w", id, werr)
	}
	return nil
}

// ReadMap returns the namespace path recorded in dir for container id
// (an error wrapping os.ErrNotExist when none is).
func ReadMap(dir, id string) (string, error) {
	if err := validID(id); err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(dir, id))
	if err != nil {
		return "", fmt.Errorf("netns map of container %s: %w", id, err)
	}
	p := strings.TrimSpace(string(b))
	if p == "" {
		return "", fmt.Errorf("netns map of container %s: empty: %w", id, os.ErrNotExist)
	}
	return p, nil
}

// RemoveMap forgets container id's namespace; a missing entry is fine.
func RemoveMap(dir, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns map of container %s: %w", id, err)
	}
	return nil
}

// Maps returns every entry of dir: container id → namespace path.
func Maps(dir string) (map[string]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("netns map: %w", err)
	}
	out := make(map[string]string, len(ents))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
			continue
		}
		if p, err := ReadMap(dir, e.Name()); err == nil {
			out[e.Name()] = p
		}
	}
	return out, nil
}
