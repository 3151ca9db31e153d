package store

import (
	"context"
	"fmt"
)

// ImageRefsIn returns the registry references the images hold in
// repository (host/repo): repository:tag and repository@digest. A
// registry delete of one image's manifest asks it which other images
// still use that repository. LIKE being loose (its _ and the case), a
// few other references may come along; the caller parses and filters.
func (s *Store) ImageRefsIn(ctx context.Context, repository string) ([]string, error) {
	var refs []string
	err := s.WithContext(ctx).Model(&Image{}).
		Where("registry_ref LIKE ? OR registry_ref LIKE ?", repository+":%", repository+"@%").
		Pluck("registry_ref", &refs).Error
	if err != nil {
		return nil, fmt.Errorf("list image references in %s: %w", repository, err)
	}
	return refs, nil
}
