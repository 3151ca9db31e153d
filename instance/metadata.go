package instance

import (
	"context"
	"fmt"

	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// MetadataFor gathers what the metadata service and the config drive tell
// inst about itself (package metadata renders it): its identity, key,
// metadata, user data and NICs, as the database has them now.
func MetadataFor(ctx context.Context, st *store.Store, inst *store.Instance) (protocol.InstanceMetadata, error) {
	spec, err := SpecFor(ctx, st, inst)
	if err != nil {
		return protocol.InstanceMetadata{}, fmt.Errorf("metadata of %s: %w", inst.ID, err)
	}
	m := protocol.InstanceMetadata{
		UUID: inst.ID, Name: inst.Name, Hostname: inst.Hostname, ProjectID: inst.ProjectID,
		AvailabilityZone: inst.AvailabilityZone, LaunchIndex: inst.LaunchIndex, ReservationID: inst.ReservationID,
		ImageID: inst.ImageID, FlavorName: inst.FlavorName, KeyData: inst.KeyData, Meta: spec.Metadata,
		UserData: inst.UserData, NICs: spec.NICs, Password: inst.MetadataPassword,
	}
	if m.Hostname == "" {
		m.Hostname = inst.Name
	}
	if m.AvailabilityZone == "" && inst.Host != "" {
		// Nova shows the zone of the server's host when none was asked for.
		if m.AvailabilityZone, err = ZoneOf(st.WithContext(ctx), inst.Host); err != nil {
			return m, fmt.Errorf("metadata of %s: %w", inst.ID, err)
		}
	}
	if inst.KeyName != nil {
		m.KeyName = *inst.KeyName
	}
	return m, nil
}
