package image

import (
	"fmt"
	"net/http"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// importMethods are the interoperable import methods Capsule implements:
// glance-direct (PUT /stage, then POST /import). web-download and
// glance-download would have the API server fetch arbitrary URLs (a
// server-side request forgery surface) and copy-image needs several
// stores: not offered.
var importMethods = []string{"glance-direct"}

// importInfo is GET /v2/info/import.
func (s *Service) importInfo(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"import-methods": map[string]any{
		"description": "Import methods available.", "type": "array", "value": importMethods}})
}

// importImage is POST /v2/images/{id}/import: glance-direct makes a staged
// image (uploading) active; its data is already in the registry, so the
// import completes before the 202.
func (s *Service) importImage(w http.ResponseWriter, r *http.Request) {
	img, c, ok := s.loadVisible(w, r)
	if !ok {
		return
	}
	if !canModify(c, &img) {
		s.respondErr(w, r, errdefs.Forbidden("You are not authorized to import image "+img.ID))
		return
	}
	var body struct {
		Method *struct {
			Name string `json:"name"`
		} `json:"method"`
		Stores               []string `json:"stores"`
		AllStores            *bool    `json:"all_stores"`
		AllStoresMustSucceed *bool    `json:"all_stores_must_succeed"`
	}
	if err := httpapi.ReadJSON(r, &body); err != nil {
		s.respondErr(w, r, errdefs.InvalidArgument("Malformed import request: "+err.Error()))
		return
	}
	if body.Method == nil || body.Method.Name == "" {
		s.respondErr(w, r, errdefs.InvalidArgument("Import request requires a 'method' field."))
		return
	}
	if body.Method.Name != "glance-direct" {
		s.respondErr(w, r, errdefs.InvalidArgumentf("Import method %s is not supported: this cloud offers %v.", body.Method.Name, importMethods))
		return
	}
	if len(body.Stores) > 0 || (body.AllStores != nil && *body.AllStores) {
		s.respondErr(w, r, errdefs.InvalidArgument("This cloud has a single image store: stores and all_stores cannot be given."))
		return
	}
	// Only a staged image moves on, and only once.
	res := s.st.WithContext(r.Context()).Model(&store.Image{}).
		Where("id = ? AND status = ?", img.ID, StatusUploading).Update("status", StatusActive)
	if res.Error != nil {
		s.internalError(w, r, fmt.Errorf("import image %s: %w", img.ID, res.Error))
		return
	}
	if res.RowsAffected == 0 {
		s.respondErr(w, r, errdefs.Conflictf("Image status transition from '%s' to 'importing' is not allowed: stage the data (PUT /v2/images/%s/stage) first.", img.Status, img.ID))
		return
	}
	w.WriteHeader(http.StatusAccepted)
}
