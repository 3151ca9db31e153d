package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// A server has one root disk, as a VM has: its flavor's disk caps the
// container's writable layer, and snapshots and cold migrations carry that
// layer (docker commit). An image's VOLUME would make Docker mount an
// anonymous volume at the path instead: outside the cap (a tenant could
// fill the host through it) and outside every commit (its data silently
// lost on migration). So Capsule treats VOLUME paths as plain directories
// of the root filesystem and strips the declaration from image configs
// (docs/security.md "Root disk").

// LabelVolumeDirs is the image config label in which WithoutVolumes
// keeps the paths of the VOLUMEs it drops (a JSON array): Docker creates
// a VOLUME's directory when it mounts the volume, so an image's layers
// need not have it; the compute driver creates the ones the server's
// root filesystem lacks before the server first starts. A tenant setting
// it only gets empty directories made in its own server.
const LabelVolumeDirs = "capsule.volume_dirs"

// maxVolumeDirs bounds the directories one image makes the driver create.
const maxVolumeDirs = 64

// WithoutVolumes returns the image config JSON cfg (the config blob of a
// schema-2 manifest, or of a docker-save tarball) without the VOLUMEs it
// declares, and the paths it dropped, sorted. A config declaring none is
// returned unchanged, byte for byte (its digest, the image ID, stays);
// otherwise config.Volumes (the one Docker reads at create) and the
// historic container_config.Volumes go and the paths join the
// LabelVolumeDirs label of config: every other field keeps its value, the
// layers (rootfs.diff_ids) stay as they are.
func WithoutVolumes(cfg []byte) ([]byte, []string, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(cfg, &top); err != nil {
		return nil, nil, fmt.Errorf("image config: %w", err)
	}
	if top == nil {
		return nil, nil, fmt.Errorf("image config: not a JSON object")
	}
	var dropped []string
	subs := map[string]map[string]json.RawMessage{}
	for _, key := range []string{"config", "container_config"} {
		raw, ok := top[key]
		if !ok || isNull(raw) {
			continue
		}
		var sub map[string]json.RawMessage
		if err := json.Unmarshal(raw, &sub); err != nil {
			return nil, nil, fmt.Errorf("image config: %s: %w", key, err)
		}
		vraw, ok := sub["Volumes"]
		if !ok || isNull(vraw) {
			continue
		}
		var vols map[string]json.RawMessage
		if err := json.Unmarshal(vraw, &vols); err != nil {
			return nil, nil, fmt.Errorf("image config: %s.Volumes: %w", key, err)
		}
		if len(vols) == 0 {
			continue
		}
		if key == "config" {
			for p := range vols {
				dropped = append(dropped, p)
			}
		}
		delete(sub, "Volumes")
		subs[key] = sub
	}
	if len(subs) == 0 {
		return cfg, nil, nil
	}
	if c := subs["config"]; c != nil {
		var labels map[string]string
		if raw, ok := c["Labels"]; ok && !isNull(raw) {
			if err := json.Unmarshal(raw, &labels); err != nil {
				return nil, nil, fmt.Errorf("image config: config.Labels: %w", err)
			}
		}
		if labels == nil {
			labels = map[string]string{}
		}
		dirs := VolumeDirs(labels)
		for _, p := range dropped {
			if p := cleanDir(p); p != "" {
				dirs = append(dirs, p)
			}
		}
		slices.Sort(dirs)
		dirs = slices.Compact(dirs)
		if len(dirs) > maxVolumeDirs {
			return nil, nil, fmt.Errorf("image config: more than %d volumes", maxVolumeDirs)
		}
		b, _ := json.Marshal(dirs)
		labels[LabelVolumeDirs] = string(b)
		lb, err := json.Marshal(labels)
		if err != nil {
			return nil, nil, fmt.Errorf("image config: config.Labels: %w", err)
		}
		c["Labels"] = lb
	}
	for key, sub := range subs {
		b, err := json.Marshal(sub)
		if err != nil {
			return nil, nil, fmt.Errorf("image config: %s: %w", key, err)
		}
		top[key] = b
	}
	out, err := json.Marshal(top)
	if err != nil {
		return nil, nil, fmt.Errorf("image config: %w", err)
	}
	slices.Sort(dropped)
	return out, dropped, nil
}

// VolumeDirs are the directories an image's labels ask the driver to
// make (LabelVolumeDirs): absolute, clean, not "/", sorted, at most
// maxVolumeDirs; an unreadable label asks for none.
func VolumeDirs(labels map[string]string) []string {
	v := labels[LabelVolumeDirs]
	if v == "" {
		return nil
	}
	var paths []string
	if err := json.Unmarshal([]byte(v), &paths); err != nil {
		return nil
	}
	var out []string
	for _, p := range paths {
		if p := cleanDir(p); p != "" {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > maxVolumeDirs {
		out = out[:maxVolumeDirs]
	}
	return out
}

// cleanDir is p as an absolute clean path; "" for the root, an empty
// path or one with a NUL byte.
func cleanDir(p string) string {
	if p == "" || strings.ContainsRune(p, 0) {
		return ""
	}
	p = path.Clean("/" + p)
	if p == "/" {
		return ""
	}
	return p
}

// isNull reports whether raw is the JSON null.
func isNull(raw json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}
