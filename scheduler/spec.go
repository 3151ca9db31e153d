package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// SpecFor builds what an agent needs to build inst: the instance's own
// flavor copy, its hostname and metadata, and the registry reference of
// its image. An image deleted since the instance was created leaves
// ImageRef empty rather than failing, so reconciliation of the instances
// already running keeps working; a new build must check ImageRef itself.
func SpecFor(ctx context.Context, st *store.Store, inst *store.Instance) (protocol.InstanceSpec, error) {
	spec := protocol.InstanceSpec{
		ID: inst.ID, Name: inst.Name, Hostname: inst.Hostname, ProjectID: inst.ProjectID,
		VCPUs: inst.VCPUs, MemoryMB: inst.MemoryMB, DiskGB: inst.RootGB,
	}
	var err error
	if spec.ExtraSpecs, err = stringMap(inst.ExtraSpecs); err != nil {
		return spec, fmt.Errorf("spec of %s: extra specs: %w", inst.ID, err)
	}
	if spec.Metadata, err = stringMap(inst.Metadata); err != nil {
		return spec, fmt.Errorf("spec of %s: metadata: %w", inst.ID, err)
	}
	if inst.ImageID == "" {
		return spec, nil
	}
	var img store.Image
	err = st.WithContext(ctx).Where("id = ?", inst.ImageID).First(&img).Error
	if err = store.NotFound(err, "image "+inst.ImageID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return spec, nil
		}
		return spec, fmt.Errorf("spec of %s: %w", inst.ID, err)
	}
	spec.ImageRef = img.RegistryRef
	return spec, nil
}

// stringMap decodes a JSON object column; "" and "null" are empty.
func stringMap(s string) (map[string]string, error) {
	if s == "" || s == "null" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}
