package image

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"gorm.io/gorm"
)

// Image member statuses (Glance's).
const (
	MemberPending  = "pending"
	MemberAccepted = "accepted"
	MemberRejected = "rejected"
)

func memberView(m *store.ImageMember) map[string]any {
	return map[string]any{"image_id": m.ImageID, "member_id": m.MemberID, "status": m.Status,
		"created_at": glanceTime(m.CreatedAt), "updated_at": glanceTime(m.UpdatedAt), "schema": "/v2/schemas/member"}
}

// memberImage loads a shared image for a member request: 404 when the
// caller may not see it, 403 when it is not shared (Glance: "Only shared
// images have members.").
func (s *Service) memberImage(w http.ResponseWriter, r *http.Request) (store.Image, *auth.Credentials, bool) {
	img, c, ok := s.loadVisible(w, r)
	if !ok {
		return img, c, false
	}
	if img.Visibility != VisibilityShared {
		s.respondErr(w, r, errdefs.Forbidden("Only shared images have members."))
		return img, c, false
	}
	return img, c, true
}

func isOwner(c *auth.Credentials, img *store.Image) bool {
	return c.IsAdmin() || (img.Owner != "" && img.Owner == c.ProjectID)
}

// listMembers is GET /v2/images/{id}/members: all of them for the owner,
// its own membership for a member.
func (s *Service) listMembers(w http.ResponseWriter, r *http.Request) {
	img, c, ok := s.memberImage(w, r)
	if !ok {
		return
	}
	q := s.st.WithContext(r.Context()).Where("image_id = ?", img.ID)
	if !isOwner(c, &img) {
		q = q.Where("member_id = ?", c.ProjectID)
	}
	var ms []store.ImageMember
	if err := q.Order("created_at, member_id").Find(&ms).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list members of image %s: %w", img.ID, err))
		return
	}
	out := make([]map[string]any, 0, len(ms))
	for i := range ms {
		out = append(out, memberView(&ms[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"members": out, "schema": "/v2/schemas/members"})
}

// createMember is POST /v2/images/{id}/members {"member": project}: the
// owner shares the image; the membership starts pending.
func (s *Service) createMember(w http.ResponseWriter, r *http.Request) {
	img, c, ok := s.memberImage(w, r)
	if !ok {
		return
	}
	if !isOwner(c, &img) || !c.CanWrite() {
		s.respondErr(w, r, errdefs.Forbidden("You are not permitted to create image members for the image."))
		return
	}
	var body struct {
		Member *string `json:"member"`
	}
	if err := httpapi.ReadJSON(r, &body); err != nil || body.Member == nil || *body.Member == "" || len(*body.Member) > 64 {
		s.respondErr(w, r, errdefs.InvalidArgument("Member to be added not specified"))
		return
	}
	if *body.Member == img.Owner {
		s.respondErr(w, r, errdefs.InvalidArgument("The image's owner cannot be one of its members."))
		return
	}
	now := time.Now().UTC()
	m := store.ImageMember{ImageID: img.ID, MemberID: *body.Member, Status: MemberPending, CreatedAt: now, UpdatedAt: now}
	if err := s.st.WithContext(r.Context()).Create(&m).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			s.respondErr(w, r, errdefs.Conflictf("Member %s already exists for image %s", m.MemberID, img.ID))
			return
		}
		s.internalError(w, r, fmt.Errorf("add member %s to image %s: %w", m.MemberID, img.ID, err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, memberView(&m))
}

// member loads membership {member_id} of the request's image: the owner
// sees any, a member only its own (others are 404).
func (s *Service) member(w http.ResponseWriter, r *http.Request) (store.Image, store.ImageMember, *auth.Credentials, bool) {
	var m store.ImageMember
	img, c, ok := s.memberImage(w, r)
	if !ok {
		return img, m, c, false
	}
	id := r.PathValue("member")
	err := s.st.WithContext(r.Context()).Where("image_id = ? AND member_id = ?", img.ID, id).Take(&m).Error
	if err == nil && !isOwner(c, &img) && id != c.ProjectID {
		err = gorm.ErrRecordNotFound
	}
	if errors.Is(err, gorm.ErrRecordNotFound) {
		s.respondErr(w, r, errdefs.NotFoundf("%s is not a member of image %s", id, img.ID))
		return img, m, c, false
	}
	if err != nil {
		s.internalError(w, r, fmt.Errorf("member %s of image %s: %w", id, img.ID, err))
		return img, m, c, false
	}
	return img, m, c, true
}

func (s *Service) getMember(w http.ResponseWriter, r *http.Request) {
	if _, m, _, ok := s.member(w, r); ok {
		httpapi.WriteJSON(w, http.StatusOK, memberView(&m))
	}
}

// updateMember is PUT /v2/images/{id}/members/{member} {"status": ...}:
// only the member itself accepts, rejects or sets it back to pending.
func (s *Service) updateMember(w http.ResponseWriter, r *http.Request) {
	img, m, c, ok := s.member(w, r)
	if !ok {
		return
	}
	if m.MemberID != c.ProjectID || !c.CanWrite() {
		s.respondErr(w, r, errdefs.Forbidden("You are not permitted to modify 'status' on this image member."))
		return
	}
	var body struct {
		Status string `json:"status"`
	}
	if err := httpapi.ReadJSON(r, &body); err != nil {
		s.respondErr(w, r, errdefs.InvalidArgument("Malformed request body: "+err.Error()))
		return
	}
	switch body.Status {
	case MemberPending, MemberAccepted, MemberRejected:
	default:
		s.respondErr(w, r, errdefs.InvalidArgumentf("Invalid status: %q (pending, accepted or rejected)", body.Status))
		return
	}
	m.Status, m.UpdatedAt = body.Status, time.Now().UTC()
	if err := s.st.WithContext(r.Context()).Model(&store.ImageMember{}).
		Where("image_id = ? AND member_id = ?", img.ID, m.MemberID).
		Updates(map[string]any{"status": m.Status, "updated_at": m.UpdatedAt}).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("update member %s of image %s: %w", m.MemberID, img.ID, err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, memberView(&m))
}

// deleteMember is DELETE /v2/images/{id}/members/{member}: the owner's.
func (s *Service) deleteMember(w http.ResponseWriter, r *http.Request) {
	img, m, c, ok := s.member(w, r)
	if !ok {
		return
	}
	if !isOwner(c, &img) || !c.CanWrite() {
		s.respondErr(w, r, errdefs.Forbidden("You cannot delete image member for "+img.ID))
		return
	}
	if err := s.st.WithContext(r.Context()).Where("image_id = ? AND member_id = ?", img.ID, m.MemberID).
		Delete(&store.ImageMember{}).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("delete member %s of image %s: %w", m.MemberID, img.ID, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
