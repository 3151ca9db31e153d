// Package rescue recovers a server's files straight from Docker's data
// root, without dockerd: when the daemon will not start, a tenant's data is
// still on disk as overlay2 layers, and an operator must be able to get it
// out (a production lesson: it once had to be done by hand).
//
// It reads only Docker's on-disk state (containers/<id>/config.v2.json,
// image/overlay2/layerdb/mounts/<id>/mount-id, overlay2/<id>/{diff,lower},
// volumes/<name>/_data) and writes the server's filesystem, as the
// container saw it, into a directory of the operator's choosing.
package rescue

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Labels Capsule puts on its containers (drivers/docker and agent own
// them; repeated here so an offline tool needs neither package).
const (
	LabelInstance = "capsule.instance"
	LabelRole     = "capsule.role"
	LabelName     = "capsule.name"
	RoleSandbox   = "sandbox"
)

// DefaultDataRoot is where deploy/lib.sh's dedicated dockerd keeps its
// state ($CAPSULE_LIB/docker).
const DefaultDataRoot = "/var/lib/capsule/docker"

// StorageDriver is the only graph driver whose layout this package knows.
const StorageDriver = "overlay2"

// ErrNotFound: no server matches.
var ErrNotFound = errors.New("server not found")

// Container is one Capsule container as Docker last recorded it.
type Container struct {
	ID            string    `json:"id"`
	Name          string    `json:"container_name"` // Docker's, without the slash
	InstanceID    string    `json:"server"`
	ServerName    string    `json:"name,omitempty"`
	Role          string    `json:"role,omitempty"` // "sandbox" or "" (the workload)
	State         string    `json:"state"`
	Driver        string    `json:"storage_driver"`
	Image         string    `json:"image"`
	ImageID       string    `json:"image_id"`
	Created       time.Time `json:"created"`
	HostsPath     string    `json:"-"`
	HostnamePath  string    `json:"-"`
	ResolvConf    string    `json:"-"`
	Mounts        []Mount   `json:"-"`
	configPath    string
	containerRoot string
}

// String names the server for messages: its UUID, or its container when
// the config was unreadable.
func (c Container) String() string {
	if c.InstanceID != "" {
		return c.InstanceID
	}
	return "container " + c.ID[:12]
}

// Mount is one of the container's mount points.
type Mount struct {
	Type        string // volume, bind, tmpfs, ...
	Name        string // volume name
	Driver      string // volume driver
	Source      string
	Destination string
}

// configV2 is the part of containers/<id>/config.v2.json this package
// reads (moby's container.Container; stable across Docker 1.13 to 28).
type configV2 struct {
	ID      string
	Name    string
	Driver  string
	Created time.Time
	Image   string // the image ID
	Config  *struct {
		Image  string
		Labels map[string]string
	}
	State *struct {
		Running, Paused, Restarting, Dead bool
		ExitCode                          int
		StartedAt                         time.Time
	}
	MountPoints map[string]*struct {
		Source, Destination, Name, Driver, Type string
	}
	HostnamePath, HostsPath, ResolvConfPath string
}

var hexID = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Containers lists the Capsule containers (those with a capsule.instance
// label) of the Docker data root dataRoot, sandboxes included, sorted by
// server name then id. Containers whose config cannot be read are listed
// too, with only their ID and an "unreadable: ..." State.
func Containers(dataRoot string) ([]Container, error) {
	if err := checkDataRoot(dataRoot); err != nil {
		return nil, err
	}
	dir := filepath.Join(dataRoot, "containers")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list containers in %s: %w", dataRoot, err)
	}
	var out []Container
	for _, e := range ents {
		if !hexID.MatchString(e.Name()) {
			continue
		}
		c, err := readContainer(dataRoot, e.Name())
		if err != nil {
			// A damaged config may be why dockerd will not start: list
			// the container anyway (its layers are still reachable by
			// container ID), without hiding the others.
			out = append(out, Container{ID: e.Name(), State: "unreadable: " + err.Error(),
				Driver: guessDriver(dataRoot, e.Name()), containerRoot: filepath.Join(dataRoot, "containers", e.Name())})
			continue
		}
		if c.InstanceID != "" {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.ServerName != b.ServerName {
			return a.ServerName < b.ServerName
		}
		if a.InstanceID != b.InstanceID {
			return a.InstanceID < b.InstanceID
		}
		return a.ID < b.ID
	})
	return out, nil
}

// checkDataRoot refuses what is not a Docker data root, or one another
// storage driver wrote.
func checkDataRoot(dataRoot string) error {
	if fi, err := os.Stat(filepath.Join(dataRoot, "containers")); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not a Docker data root (no containers/ directory)", dataRoot)
	}
	if _, err := os.Stat(filepath.Join(dataRoot, "image", StorageDriver)); err == nil {
		return nil
	}
	ents, _ := os.ReadDir(filepath.Join(dataRoot, "image"))
	var drivers []string
	for _, e := range ents {
		drivers = append(drivers, e.Name())
	}
	if len(drivers) > 0 {
		return fmt.Errorf("%s uses storage driver %s: only %s is supported", dataRoot, strings.Join(drivers, ", "), StorageDriver)
	}
	return fmt.Errorf("%s has no image/%s metadata: only the %s storage driver is supported", dataRoot, StorageDriver, StorageDriver)
}

func readContainer(dataRoot, id string) (Container, error) {
	root := filepath.Join(dataRoot, "containers", id)
	p := filepath.Join(root, "config.v2.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return Container{}, fmt.Errorf("read %s: %w", p, err)
	}
	var cfg configV2
	if err := json.Unmarshal(b, &cfg); err != nil {
		return Container{}, fmt.Errorf("parse %s: %w", p, err)
	}
	c := Container{
		ID:            id,
		Name:          strings.TrimPrefix(cfg.Name, "/"),
		Driver:        cfg.Driver,
		ImageID:       cfg.Image,
		Created:       cfg.Created,
		State:         "unknown",
		HostsPath:     cfg.HostsPath,
		HostnamePath:  cfg.HostnamePath,
		ResolvConf:    cfg.ResolvConfPath,
		configPath:    p,
		containerRoot: root,
	}
	if cfg.Config != nil {
		c.Image = cfg.Config.Image
		c.InstanceID = cfg.Config.Labels[LabelInstance]
		c.ServerName = cfg.Config.Labels[LabelName]
		c.Role = cfg.Config.Labels[LabelRole]
	}
	if c.InstanceID != "" {
		// The driver names its containers capsule-<id> and
		// capsule-<id>-sandbox, which an image cannot; labels an image
		// baked in could reach containers created before the driver set
		// all of its own, so the name decides the instance and the role.
		if rest, ok := strings.CutPrefix(c.Name, "capsule-"); ok && rest != "" {
			id, sandbox := strings.CutSuffix(rest, "-sandbox")
			c.InstanceID, c.Role = id, ""
			if sandbox {
				c.Role = RoleSandbox
			}
		}
	}
	if s := cfg.State; s != nil {
		switch {
		case s.Running && s.Paused:
			c.State = "paused"
		case s.Restarting:
			c.State = "restarting"
		case s.Running:
			c.State = "running"
		case s.Dead:
			c.State = "dead"
		case s.StartedAt.IsZero() || s.StartedAt.Year() <= 1:
			c.State = "created"
		default:
			c.State = fmt.Sprintf("exited (%d)", s.ExitCode)
		}
	}
	dests := make([]string, 0, len(cfg.MountPoints))
	for d := range cfg.MountPoints {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	for _, d := range dests {
		mp := cfg.MountPoints[d]
		if mp == nil {
			continue
		}
		dst := mp.Destination
		if dst == "" {
			dst = d
		}
		typ := mp.Type
		if typ == "" { // Docker < 17.06 left it empty
			typ = "bind"
			if mp.Name != "" {
				typ = "volume"
			}
		}
		c.Mounts = append(c.Mounts, Mount{Type: typ, Name: mp.Name, Driver: mp.Driver, Source: mp.Source, Destination: dst})
	}
	return c, nil
}

// guessDriver: overlay2 when its layer metadata knows the container.
func guessDriver(dataRoot, id string) string {
	if _, err := os.Stat(filepath.Join(dataRoot, "image", StorageDriver, "layerdb", "mounts", id, "mount-id")); err == nil {
		return StorageDriver
	}
	return "unknown"
}

// Find returns the workload container of server ref in dataRoot: ref is
// the server's UUID, its name (refused when several servers share it) or a
// container ID prefix.
func Find(dataRoot, ref string) (Container, error) {
	all, err := Containers(dataRoot)
	if err != nil {
		return Container{}, err
	}
	var workloads []Container
	for _, c := range all {
		if c.Role != RoleSandbox {
			workloads = append(workloads, c)
		}
	}
	match := func(f func(Container) bool) []Container {
		var out []Container
		for _, c := range workloads {
			if f(c) {
				out = append(out, c)
			}
		}
		return out
	}
	cands := match(func(c Container) bool { return c.InstanceID == ref })
	if len(cands) == 0 {
		cands = match(func(c Container) bool { return c.ServerName == ref })
	}
	if len(cands) == 0 && len(ref) >= 6 {
		cands = match(func(c Container) bool { return strings.HasPrefix(c.ID, ref) })
	}

	switch len(cands) {
	case 0:
		hint := ""
		if others := otherDataRoots(dataRoot); len(others) > 0 {
			hint = "; other Docker data roots here: " + strings.Join(others, ", ")
		}
		return Container{}, fmt.Errorf("%w: no workload container of %q in %s (capsule rescue-data --list shows them)%s", ErrNotFound, ref, dataRoot, hint)
	case 1:
		return cands[0], nil
	}
	lines := make([]string, 0, len(cands))
	for _, c := range cands {
		lines = append(lines, fmt.Sprintf("  server %s name %q container %.12s (%s)", c.InstanceID, c.ServerName, c.ID, c.State))
	}
	return Container{}, fmt.Errorf("%q is ambiguous, name the server by UUID or container ID:\n%s", ref, strings.Join(lines, "\n"))
}

// Layer is one overlay layer of a container.
type Layer struct {
	ID   string `json:"id"`
	Role string `json:"role"` // writable, init, image
	Path string `json:"path"` // its diff directory
}

var shortLink = regexp.MustCompile(`^l/[A-Z0-9]+$`)
var linkTarget = regexp.MustCompile(`^\.\./([0-9a-f]{64}(-init)?)/diff$`)

// Layers returns c's overlay layers, top (its writable layer) first, as
// overlay2 recorded them: layerdb/mounts/<container>/mount-id names the
// writable layer's directory, whose "lower" file lists the rest.
func Layers(dataRoot string, c Container) ([]Layer, error) {
	if c.Driver != StorageDriver {
		return nil, fmt.Errorf("container %.12s uses storage driver %q: only %s is supported", c.ID, c.Driver, StorageDriver)
	}
	mp := filepath.Join(dataRoot, "image", StorageDriver, "layerdb", "mounts", c.ID, "mount-id")
	b, err := os.ReadFile(mp)
	if err != nil {
		return nil, fmt.Errorf("read the writable layer's id: %w", err)
	}
	mountID := strings.TrimSpace(string(b))
	if !hexID.MatchString(mountID) {
		return nil, fmt.Errorf("%s: unexpected layer id %q", mp, mountID)
	}
	ovl := filepath.Join(dataRoot, StorageDriver)
	layers := []Layer{{ID: mountID, Role: "writable", Path: filepath.Join(ovl, mountID, "diff")}}
	lp := filepath.Join(ovl, mountID, "lower")
	b, err = os.ReadFile(lp)
	if errors.Is(err, os.ErrNotExist) {
		return layers, nil // no parent: a container from scratch
	}
	if err != nil {
		return nil, fmt.Errorf("read the lower layers: %w", err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), ":") {
		// Each entry is a short symlink l/<ID> -> ../<layer>/diff; its
		// target is checked, not followed, so a corrupt file cannot point
		// the copy at an arbitrary directory.
		if !shortLink.MatchString(l) {
			return nil, fmt.Errorf("%s: unexpected entry %q", lp, l)
		}
		t, err := os.Readlink(filepath.Join(ovl, l))
		if err != nil {
			return nil, fmt.Errorf("resolve lower layer %s: %w", l, err)
		}
		m := linkTarget.FindStringSubmatch(t)
		if m == nil {
			return nil, fmt.Errorf("lower layer %s: unexpected link target %q", l, t)
		}
		role := "image"
		if m[2] != "" {
			role = "init"
		}
		layers = append(layers, Layer{ID: m[1], Role: role, Path: filepath.Join(ovl, m[1], "diff")})
	}
	for _, l := range layers {
		if fi, err := os.Stat(l.Path); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("layer %s (%s) is missing its diff directory %s", l.ID, l.Role, l.Path)
		}
	}
	return layers, nil
}
