package store

import (
	"context"
	"fmt"
	"time"
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

// ImageMember is a project an image is shared with (Glance's image
// members): the image's owner adds it, the member accepts, rejects or
// leaves it pending; only a shared image's members see it.
type ImageMember struct {
	ImageID   string `gorm:"primaryKey;size:64"`
	MemberID  string `gorm:"primaryKey;size:64;index"` // a project id
	Status    string `gorm:"size:16"`                  // pending | accepted | rejected
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ImageMemberships maps the ids of the images project is a member of to
// its membership status.
func (s *Store) ImageMemberships(ctx context.Context, project string) (map[string]string, error) {
	var ms []ImageMember
	if err := s.WithContext(ctx).Where("member_id = ?", project).Find(&ms).Error; err != nil {
		return nil, fmt.Errorf("image memberships of %s: %w", project, err)
	}
	out := make(map[string]string, len(ms))
	for _, m := range ms {
		out[m.ImageID] = m.Status
	}
	return out, nil
}
