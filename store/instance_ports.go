package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// OwnedPortList returns the ids of the ports the Compute API created for
// the instance.
func (i *Instance) OwnedPortList() []string {
	var ids []string
	if i.OwnedPorts != "" {
		_ = json.Unmarshal([]byte(i.OwnedPorts), &ids)
	}
	return ids
}

// SetOwnedPorts records the ports the Compute API created for the instance.
func (i *Instance) SetOwnedPorts(ids []string) {
	b, _ := json.Marshal(ids)
	i.OwnedPorts = string(b)
}

// ReleaseInstancePorts lets go of an instance's ports: the ones the
// Compute API created are deleted (their addresses freed), the ones the
// user passed in are unbound and stay. Ports already gone are fine.
func (s *Store) ReleaseInstancePorts(ctx context.Context, inst *Instance) error {
	owned := map[string]bool{}
	for _, id := range inst.OwnedPortList() {
		owned[id] = true
	}
	ports, err := s.ServerPorts(ctx, inst.ID, inst.ProjectID)
	if err != nil {
		return err
	}
	for _, p := range ports {
		if owned[p.ID] {
			continue // deleted below, also when no longer bound
		}
		if _, err := s.BindPort(ctx, p.ID, "", "", ""); err != nil && !errors.Is(err, ErrPortNotFound) {
			return fmt.Errorf("unbind port %s of %s: %w", p.ID, inst.ID, err)
		}
	}
	for id := range owned {
		if err := s.ReleasePort(ctx, id); err != nil && !errors.Is(err, ErrPortNotFound) {
			return fmt.Errorf("release port %s of %s: %w", id, inst.ID, err)
		}
	}
	return nil
}
