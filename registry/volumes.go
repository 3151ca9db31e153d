package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// A server has one root disk, as a VM has: its flavor's disk caps the
// container's writable layer, and snapshots and cold migrations carry that
// layer (docker commit). An image's VOLUME would make Docker mount an
// anonymous volume at the path instead: outside the cap (a tenant could
// fill the host through it) and outside every commit (its data silently
// lost on migration). So Capsule treats VOLUME paths as plain directories
// of the root filesystem and strips the declaration from image configs
// (docs/security.md "Root disk").

// WithoutVolumes returns the image config JSON cfg (the config blob of a
// schema-2 manifest, or of a docker-save tarball) without the VOLUMEs it
// declares, and the paths it dropped, sorted. A config declaring none is
// returned unchanged, byte for byte (its digest, the image ID, stays);
// otherwise only config.Volumes (the one Docker reads at create) and the
// historic container_config.Volumes go: every other field keeps its value,
// the layers (rootfs.diff_ids) stay as they are.
func WithoutVolumes(cfg []byte) ([]byte, []string, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(cfg, &top); err != nil {
		return nil, nil, fmt.Errorf("image config: %w", err)
	}
	if top == nil {
		return nil, nil, fmt.Errorf("image config: not a JSON object")
	}
	var dropped []string
	changed := false
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
		b, err := json.Marshal(sub)
		if err != nil {
			return nil, nil, fmt.Errorf("image config: %s: %w", key, err)
		}
		top[key] = b
		changed = true
	}
	if !changed {
		return cfg, nil, nil
	}
	out, err := json.Marshal(top)
	if err != nil {
		return nil, nil, fmt.Errorf("image config: %w", err)
	}
	slices.Sort(dropped)
	return out, dropped, nil
}

// isNull reports whether raw is the JSON null.
func isNull(raw json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}
