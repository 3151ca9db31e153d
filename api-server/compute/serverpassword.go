package compute

import (
	"net/http"

	"github.com/capsule-cloud/capsule/store"
)

// showServerPassword is Nova's GET /servers/{id}/os-server-password: the
// (encrypted) password the server posted to the metadata service, "" when
// it posted none, to its project (reader or more) and admins.
func (s *Service) showServerPassword(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"password": inst.MetadataPassword})
}

// clearServerPassword is Nova's DELETE /servers/{id}/os-server-password:
// the posted password is forgotten (204), so the server may post a new
// one.
func (s *Service) clearServerPassword(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	if err := s.st.WithContext(r.Context()).Model(&store.Instance{}).Where("id = ?", inst.ID).
		Update("metadata_password", "").Error; err != nil {
		s.fail(w, r, err)
		return
	}
	noContent(w, http.StatusNoContent)
}
