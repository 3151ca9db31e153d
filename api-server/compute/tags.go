package compute

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// Server tags (Nova 2.26): strings of 1-60 characters without ',' or '/',
// at most store.MaxServerTags per server, kept sorted and distinct.
// Servers may be tagged in the vm_states Nova allows it in; the list
// filters tags, tags-any, not-tags and not-tags-any are in servers.go.

// maxTagLength is Nova's tag length limit.
const maxTagLength = 60

// validTag refuses a tag Nova's schema refuses.
func validTag(tag string) error {
	if tag == "" || len(tag) > maxTagLength || strings.ContainsAny(tag, ",/") {
		return errdefs.InvalidArgumentf("Invalid input for field/attribute tag. Value: %q. A tag is 1 to %d characters without ',' or '/'.", tag, maxTagLength)
	}
	return nil
}

// validTagList checks a whole list of tags (create at 2.52, PUT all).
func validTagList(tags []string) error {
	if len(tags) > store.MaxServerTags {
		return errdefs.InvalidArgumentf("The number of tags exceeded the per-server limit %d", store.MaxServerTags)
	}
	for _, t := range tags {
		if err := validTag(t); err != nil {
			return err
		}
	}
	return nil
}

// taggable are the vm_states Nova lets tags change in.
var taggable = []lifecycle.VMState{lifecycle.Active, lifecycle.Paused, lifecycle.Suspended, lifecycle.Stopped}

// tagTarget loads the server of a tag request: 404 below 2.26 (the
// resource does not exist there), 404 for a server the caller cannot
// see; when changing, 409 outside the taggable states.
func (s *Service) tagTarget(w http.ResponseWriter, r *http.Request, changing bool) (*store.Instance, bool) {
	if !versionOf(r.Context()).AtLeast(26) {
		writeFault(w, errdefs.NotFound("The resource could not be found."))
		return nil, false
	}
	inst, ok := s.loadServer(w, r)
	if !ok {
		return nil, false
	}
	if changing && !slices.Contains(taggable, inst.VMState) {
		writeFault(w, errdefs.Conflictf("Cannot 'update tags' instance %s while it is in vm_state %s", inst.ID, inst.VMState))
		return nil, false
	}
	return inst, true
}

func (s *Service) listTags(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.tagTarget(w, r, false)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"tags": store.TagsOf(inst)})
}

// updateTags runs change on the server's tags, writing Nova's errors.
func (s *Service) updateTags(w http.ResponseWriter, r *http.Request, inst *store.Instance, change func([]string) ([]string, error)) ([]string, bool) {
	tags, err := s.st.UpdateTags(r.Context(), inst.ID, change)
	switch {
	case err == nil:
		return tags, true
	case errors.Is(err, store.ErrTooManyTags):
		// A per-server limit, which Nova answers 400 (not a quota's 403).
		s.fail(w, r, errdefs.InvalidArgumentf("The number of tags exceeded the per-server limit %d", store.MaxServerTags))
	case errors.Is(err, errTagNotFound):
		s.fail(w, r, err)
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, errdefs.NotFoundf("Instance %s could not be found.", inst.ID))
	default:
		s.fail(w, r, fmt.Errorf("update tags of %s: %w", inst.ID, err))
	}
	return nil, false
}

// errTagNotFound is a change naming a tag the server does not have.
var errTagNotFound = errdefs.Class{Kind: errdefs.ErrNotFound, Reason: "TagNotFound"}

// replaceTags serves PUT /servers/{id}/tags {"tags": [...]}.
func (s *Service) replaceTags(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.tagTarget(w, r, true)
	if !ok {
		return
	}
	var body struct {
		Tags *[]string `json:"tags"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if body.Tags == nil {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute tags. Value: 'tags' is a required property"))
		return
	}
	if err := validTagList(*body.Tags); err != nil {
		s.fail(w, r, err)
		return
	}
	tags, ok := s.updateTags(w, r, inst, func([]string) ([]string, error) { return *body.Tags, nil })
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"tags": tags})
	}
}

// deleteAllTags serves DELETE /servers/{id}/tags.
func (s *Service) deleteAllTags(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.tagTarget(w, r, true)
	if !ok {
		return
	}
	if _, ok := s.updateTags(w, r, inst, func([]string) ([]string, error) { return nil, nil }); ok {
		noContent(w, http.StatusNoContent)
	}
}

// checkTag serves GET /servers/{id}/tags/{tag}: 204 when present.
func (s *Service) checkTag(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.tagTarget(w, r, false)
	if !ok {
		return
	}
	tag := r.PathValue("tag")
	if !slices.Contains(store.TagsOf(inst), tag) {
		writeFault(w, errdefs.NotFoundf("Tag %s could not be found.", tag))
		return
	}
	noContent(w, http.StatusNoContent)
}

// addTag serves PUT /servers/{id}/tags/{tag}: 201 when added, 204 when it
// was there; both with the tag's Location, as Nova answers.
func (s *Service) addTag(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.tagTarget(w, r, true)
	if !ok {
		return
	}
	tag := r.PathValue("tag")
	if err := validTag(tag); err != nil {
		s.fail(w, r, err)
		return
	}
	existed := false
	_, ok = s.updateTags(w, r, inst, func(tags []string) ([]string, error) {
		existed = slices.Contains(tags, tag)
		return append(tags, tag), nil
	})
	if !ok {
		return
	}
	w.Header().Set("Location", s.links(r, "servers", inst.ID)[0]["href"]+"/tags/"+url.PathEscape(tag))
	if existed {
		noContent(w, http.StatusNoContent)
		return
	}
	noContent(w, http.StatusCreated)
}

// deleteTag serves DELETE /servers/{id}/tags/{tag}.
func (s *Service) deleteTag(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.tagTarget(w, r, true)
	if !ok {
		return
	}
	tag := r.PathValue("tag")
	_, ok = s.updateTags(w, r, inst, func(tags []string) ([]string, error) {
		if !slices.Contains(tags, tag) {
			return nil, errTagNotFound.Newf("Tag %s could not be found.", tag)
		}
		return slices.DeleteFunc(tags, func(t string) bool { return t == tag }), nil
	})
	if ok {
		noContent(w, http.StatusNoContent)
	}
}

// tagFilter is the servers list's tag filters (2.26): tags (all of),
// tags-any (one of), not-tags (not all of), not-tags-any (none of), each
// a comma-separated list.
type tagFilter struct {
	all, anyOf, notAll, notAny []string
}

func parseTagFilter(q map[string][]string) (tagFilter, bool) {
	split := func(key string) []string {
		v := strings.Join(q[key], ",")
		if v == "" {
			return nil
		}
		return strings.Split(v, ",")
	}
	f := tagFilter{all: split("tags"), anyOf: split("tags-any"), notAll: split("not-tags"), notAny: split("not-tags-any")}
	return f, f.all != nil || f.anyOf != nil || f.notAll != nil || f.notAny != nil
}

// match reports whether a server with tags passes every given filter.
func (f tagFilter) match(tags []string) bool {
	has := func(t string) bool { return slices.Contains(tags, t) }
	all := func(want []string) bool {
		for _, t := range want {
			if !has(t) {
				return false
			}
		}
		return true
	}
	anyOf := func(want []string) bool { return slices.ContainsFunc(want, has) }
	if f.all != nil && !all(f.all) {
		return false
	}
	if f.anyOf != nil && !anyOf(f.anyOf) {
		return false
	}
	if f.notAll != nil && all(f.notAll) {
		return false
	}
	if f.notAny != nil && anyOf(f.notAny) {
		return false
	}
	return true
}
