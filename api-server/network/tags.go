package network

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// standard-attr-tag: /v2.0/{networks,subnets,ports,security-groups}/{id}/tags
// as Neutron serves them. Whoever may see the resource reads its tags (a
// resource it cannot see is a 404); its owner (or an admin) changes them,
// with a writer's token. A tag is 1-255 characters; a resource has at most
// 50. Lists filter on them with tags, tags-any, not-tags, not-tags-any.

// maxTagLen is the longest tag Neutron stores.
const maxTagLen = 255

func (s *Service) tagRoutes(h func(pattern string, fn http.HandlerFunc)) {
	for _, coll := range []string{"networks", "subnets", "ports", "security-groups"} {
		p := "/v2.0/" + coll + "/{id}/tags"
		h("GET "+p, s.tagHandler(coll, s.listResourceTags))
		h("PUT "+p, s.tagHandler(coll, s.replaceResourceTags))
		h("DELETE "+p, s.tagHandler(coll, s.deleteResourceTags))
		h("GET "+p+"/{tag}", s.tagHandler(coll, s.checkResourceTag))
		h("PUT "+p+"/{tag}", s.tagHandler(coll, s.addResourceTag))
		h("DELETE "+p+"/{tag}", s.tagHandler(coll, s.deleteResourceTag))
	}
}

// tagged is the resource a tag request names, as the caller may see it.
type tagged struct {
	coll, id string
	owner    string   // the project that may change its tags
	tags     []string // its tags when loaded
	notFound func() error
}

// tagHandler loads the resource coll/{id} the caller may see (404
// otherwise), refuses writes (PUT, DELETE) to anyone but its owner or an
// admin with a writer's token (403), then runs fn.
func (s *Service) tagHandler(coll string, fn func(w http.ResponseWriter, r *http.Request, t *tagged)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		t := &tagged{coll: coll, id: id}
		switch coll {
		case "networks":
			n, ok := s.visibleNetwork(w, r, id)
			if !ok {
				return
			}
			t.owner, t.tags = n.ProjectID, store.DecodeTags(n.Tags)
			t.notFound = func() error { return store.ErrNetworkNotFound.New("Network " + id + " could not be found.") }
		case "subnets":
			sn, _, ok := s.visibleSubnet(w, r, id)
			if !ok {
				return
			}
			t.owner, t.tags = sn.ProjectID, store.DecodeTags(sn.Tags)
			t.notFound = func() error { return store.ErrSubnetNotFound.New("Subnet " + id + " could not be found.") }
		case "ports":
			p, _, ok := s.visiblePort(w, r, id)
			if !ok {
				return
			}
			t.owner, t.tags = p.ProjectID, store.DecodeTags(p.Tags)
			t.notFound = func() error { return store.ErrPortNotFound.New("Port " + id + " could not be found.") }
		case "security-groups":
			g, err := s.visibleGroup(r.Context(), creds(r), id)
			if err != nil {
				s.storeError(w, r, err)
				return
			}
			t.owner, t.tags = g.ProjectID, store.DecodeTags(g.Tags)
			t.notFound = func() error { return sgNotFound(id) }
		}
		if r.Method != http.MethodGet {
			c := creds(r)
			rule := "update_" + strings.ReplaceAll(coll, "-", "_") + "_tags"
			if !owns(c, t.owner) || !c.CanWrite() {
				forbidden(w, rule)
				return
			}
		}
		fn(w, r, t)
	}
}

func singular(coll string) string {
	switch coll {
	case "security-groups":
		return "security_group"
	default:
		return coll[:len(coll)-1]
	}
}

// validTag is Neutron's tag check: a string of 1-255 characters.
func validTag(tag string) error {
	if tag == "" || utf8.RuneCountInString(tag) > maxTagLen || !utf8.ValidString(tag) {
		return store.ErrInvalidInput.New("Invalid input for operation: '" + tag + "' is not a valid tag: 1 to 255 characters.")
	}
	return nil
}

// setTags runs change on t's tags in the store and answers the error, if
// any; the tags written otherwise.
func (s *Service) setTags(w http.ResponseWriter, r *http.Request, t *tagged, change func([]string) ([]string, error)) ([]string, bool) {
	tags, err := s.st.SetResourceTags(r.Context(), t.coll, t.id, time.Now().UTC(), change)
	switch {
	case err == nil:
		return tags, true
	case errdefs.IsNotFound(err) && errdefs.Reason(err) == "":
		s.storeError(w, r, t.notFound()) // deleted since it was read
	case errdefs.IsInvalidArgument(err) && errdefs.Reason(err) == "":
		writeFault(w, store.ErrInvalidInput.New(errdefs.Message(err)))
	default:
		s.storeError(w, r, err)
	}
	return nil, false
}

func tagNotFound(t *tagged, tag string) error {
	return errdefs.NotFoundf("Tag %s could not be found for %s %s.", tag, singular(t.coll), t.id).WithReason("TagNotFound")
}

func (s *Service) listResourceTags(w http.ResponseWriter, _ *http.Request, t *tagged) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"tags": t.tags})
}

func (s *Service) checkResourceTag(w http.ResponseWriter, r *http.Request, t *tagged) {
	if !slices.Contains(t.tags, r.PathValue("tag")) {
		writeFault(w, tagNotFound(t, r.PathValue("tag")))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// replaceResourceTags is PUT .../tags {"tags": [...]}: the resource's tags
// become exactly those (duplicates dropped).
func (s *Service) replaceResourceTags(w http.ResponseWriter, r *http.Request, t *tagged) {
	var body struct {
		Tags *[]string `json:"tags"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&body); err != nil || body.Tags == nil {
		badRequest(w, "Invalid input for tags: the body must be {\"tags\": [strings]}.")
		return
	}
	for _, tag := range *body.Tags {
		if err := validTag(tag); err != nil {
			writeFault(w, err)
			return
		}
	}
	tags, ok := s.setTags(w, r, t, func([]string) ([]string, error) { return *body.Tags, nil })
	if ok {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"tags": tags})
	}
}

func (s *Service) deleteResourceTags(w http.ResponseWriter, r *http.Request, t *tagged) {
	if _, ok := s.setTags(w, r, t, func([]string) ([]string, error) { return nil, nil }); ok {
		w.WriteHeader(http.StatusNoContent)
	}
}

// addResourceTag is PUT .../tags/{tag}: 201 whether it was there or not.
func (s *Service) addResourceTag(w http.ResponseWriter, r *http.Request, t *tagged) {
	tag := r.PathValue("tag")
	if err := validTag(tag); err != nil {
		writeFault(w, err)
		return
	}
	_, ok := s.setTags(w, r, t, func(cur []string) ([]string, error) { return append(cur, tag), nil })
	if ok {
		w.WriteHeader(http.StatusCreated)
	}
}

func (s *Service) deleteResourceTag(w http.ResponseWriter, r *http.Request, t *tagged) {
	tag := r.PathValue("tag")
	_, ok := s.setTags(w, r, t, func(cur []string) ([]string, error) {
		if !slices.Contains(cur, tag) {
			return nil, tagNotFound(t, tag)
		}
		return slices.DeleteFunc(cur, func(x string) bool { return x == tag }), nil
	})
	if ok {
		w.WriteHeader(http.StatusNoContent)
	}
}
