package compute

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// os-aggregates, as Nova (admins only): named sets of compute hosts with
// metadata. The "availability_zone" metadata (also given as the
// aggregate's availability_zone) is the zone of the aggregate's hosts,
// which the scheduler's zone filter, os-availability-zone and the
// servers' zones follow (store.UpdateAggregate keeps them in step).

func (s *Service) aggregateRoutes(mux *http.ServeMux, p string) {
	mux.HandleFunc("GET "+p+"/os-aggregates", s.admin(s.listAggregates))
	mux.HandleFunc("POST "+p+"/os-aggregates", s.admin(s.createAggregate))
	mux.HandleFunc("GET "+p+"/os-aggregates/{id}", s.admin(s.showAggregate))
	mux.HandleFunc("PUT "+p+"/os-aggregates/{id}", s.admin(s.updateAggregate))
	mux.HandleFunc("DELETE "+p+"/os-aggregates/{id}", s.admin(s.deleteAggregate))
	mux.HandleFunc("POST "+p+"/os-aggregates/{id}/action", s.admin(s.aggregateAction))
}

// aggregateView is an aggregate in Nova's shape at the request's
// microversion; full adds hosts and metadata (every answer but create's).
func aggregateView(r *http.Request, a *store.AggregateView, full bool) map[string]any {
	var zone any
	if z := a.Zone(); z != "" {
		zone = z
	}
	var updated any
	if a.UpdatedAt != nil {
		updated = a.UpdatedAt.UTC().Format(serviceFmt)
	}
	out := map[string]any{"id": a.ID, "name": a.Name, "availability_zone": zone,
		"created_at": a.CreatedAt.UTC().Format(serviceFmt), "updated_at": updated, "deleted": false, "deleted_at": nil}
	if versionOf(r.Context()).AtLeast(41) {
		out["uuid"] = a.UUID
	}
	if full {
		out["hosts"] = a.Hosts
		meta := map[string]any{}
		for k, v := range a.Meta {
			meta[k] = v
		}
		out["metadata"] = meta
	}
	return out
}

// aggregateID is the {id} path element: Nova's aggregate ids are integers.
func aggregateID(r *http.Request) (uint, error) {
	raw := r.PathValue("id")
	id, err := strconv.ParseUint(raw, 10, 32)
	if err != nil {
		return 0, errdefs.InvalidArgumentf("Invalid input received: id must be an integer (got %q).", raw)
	}
	return uint(id), nil
}

// aggregateName checks a name as Nova's parameter_types.name.
func aggregateName(raw any) (string, error) {
	name, ok := raw.(string)
	if !ok || name == "" || utf8.RuneCountInString(name) > 255 || !utf8.ValidString(name) {
		return "", errdefs.InvalidArgument("Invalid input for field/attribute name. Value: name must be a string of 1-255 characters.")
	}
	first, _ := utf8.DecodeRuneInString(name)
	last, _ := utf8.DecodeLastRuneInString(name)
	if unicode.IsSpace(first) || unicode.IsSpace(last) || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return "", errdefs.InvalidArgumentf("Invalid input for field/attribute name. Value: %s. The name has leading or trailing whitespace or a control character.", name)
	}
	return name, nil
}

// aggregateZone checks an availability zone name as Nova's az_name: 1-255
// characters, no ':' (it separates zone:host) and not the zone of the
// control services. A JSON null is no zone (nil).
func aggregateZone(raw any) (*string, error) {
	if raw == nil {
		return nil, nil
	}
	z, ok := raw.(string)
	if !ok || z == "" || utf8.RuneCountInString(z) > 255 || strings.Contains(z, ":") ||
		strings.TrimSpace(z) != z || strings.IndexFunc(z, unicode.IsControl) >= 0 {
		return nil, errdefs.InvalidArgument("Invalid input for field/attribute availability_zone. Value: an availability zone is 1-255 characters without ':' or surrounding whitespace.")
	}
	if z == "internal" {
		return nil, errdefs.InvalidArgument("Aggregates may not be in the availability zone internal: it is the control services' zone.")
	}
	return &z, nil
}

// aggregateBody decodes {"<key>": {...}} with only the allowed fields.
func aggregateBody(w http.ResponseWriter, r *http.Request, key string, allowed ...string) (map[string]any, bool) {
	var body map[string]json.RawMessage
	if !decodeBody(w, r, &body) {
		return nil, false
	}
	var inner map[string]any
	if len(body) != 1 || body[key] == nil || json.Unmarshal(body[key], &inner) != nil || inner == nil {
		writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: the body must be {\"%s\": {...}}.", key, key))
		return nil, false
	}
	for k := range inner {
		if !slices.Contains(allowed, k) {
			writeFault(w, errdefs.InvalidArgumentf("Additional properties are not allowed ('%s' was unexpected)", k))
			return nil, false
		}
	}
	return inner, true
}

func (s *Service) listAggregates(w http.ResponseWriter, r *http.Request) {
	aggs, err := s.st.ListAggregates(r.Context())
	if err != nil {
		writeFault(w, err)
		return
	}
	items := make([]any, 0, len(aggs))
	for i := range aggs {
		items = append(items, aggregateView(r, &aggs[i], true))
	}
	writeJSON(w, http.StatusOK, map[string]any{"aggregates": items})
}

func (s *Service) showAggregate(w http.ResponseWriter, r *http.Request) {
	id, err := aggregateID(r)
	if err != nil {
		writeFault(w, err)
		return
	}
	agg, err := s.st.GetAggregate(r.Context(), id)
	if err != nil {
		writeFault(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"aggregate": aggregateView(r, agg, true)})
}

func (s *Service) createAggregate(w http.ResponseWriter, r *http.Request) {
	in, ok := aggregateBody(w, r, "aggregate", "name", "availability_zone")
	if !ok {
		return
	}
	name, err := aggregateName(in["name"])
	if err != nil {
		writeFault(w, err)
		return
	}
	zone, err := aggregateZone(in["availability_zone"])
	if err != nil {
		writeFault(w, err)
		return
	}
	z := ""
	if zone != nil {
		z = *zone
	}
	agg, err := s.st.CreateAggregate(r.Context(), name, z, time.Now().UTC())
	if err != nil {
		writeFault(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"aggregate": aggregateView(r, agg, false)})
}

func (s *Service) updateAggregate(w http.ResponseWriter, r *http.Request) {
	id, err := aggregateID(r)
	if err != nil {
		writeFault(w, err)
		return
	}
	in, ok := aggregateBody(w, r, "aggregate", "name", "availability_zone")
	if !ok {
		return
	}
	if len(in) == 0 {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute aggregate. Value: {}. {} does not have enough properties: name or availability_zone is required."))
		return
	}
	var c store.AggregateChange
	if raw, has := in["name"]; has {
		name, err := aggregateName(raw)
		if err != nil {
			writeFault(w, err)
			return
		}
		c.Name = &name
	}
	if raw, has := in["availability_zone"]; has {
		zone, err := aggregateZone(raw)
		if err != nil {
			writeFault(w, err)
			return
		}
		if zone == nil {
			// null leaves the hosts' zone to their agents' again.
			c.Meta = map[string]*string{store.AggregateZoneKey: nil}
		}
		c.Zone = zone
	}
	agg, err := s.st.UpdateAggregate(r.Context(), id, c, time.Now().UTC())
	if err != nil {
		writeFault(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"aggregate": aggregateView(r, agg, true)})
}

func (s *Service) deleteAggregate(w http.ResponseWriter, r *http.Request) {
	id, err := aggregateID(r)
	if err != nil {
		writeFault(w, err)
		return
	}
	if err := s.st.DeleteAggregate(r.Context(), id); err != nil {
		writeFault(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// aggregateAction is POST /os-aggregates/{id}/action: add_host,
// remove_host or set_metadata.
func (s *Service) aggregateAction(w http.ResponseWriter, r *http.Request) {
	id, err := aggregateID(r)
	if err != nil {
		writeFault(w, err)
		return
	}
	var body map[string]json.RawMessage
	if !decodeBody(w, r, &body) {
		return
	}
	if len(body) != 1 {
		writeFault(w, errdefs.InvalidArgument("Invalid request body: one action of add_host, remove_host, set_metadata."))
		return
	}
	var c store.AggregateChange
	for action, raw := range body {
		var in map[string]any
		if json.Unmarshal(raw, &in) != nil || in == nil {
			writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute %s.", action))
			return
		}
		switch action {
		case "add_host", "remove_host":
			host, ok := in["host"].(string)
			if len(in) != 1 || !ok || host == "" || len(host) > 255 {
				writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: {\"host\": a host name} is required.", action))
				return
			}
			if action == "add_host" {
				c.AddHost = host
			} else {
				c.RemoveHost = host
			}
		case "set_metadata":
			meta, err := aggregateMetadata(in)
			if err != nil {
				writeFault(w, err)
				return
			}
			c.Meta = meta
		default:
			writeFault(w, errdefs.InvalidArgumentf("Aggregates do not support the action %s.", action))
			return
		}
	}
	agg, err := s.st.UpdateAggregate(r.Context(), id, c, time.Now().UTC())
	if err != nil {
		writeFault(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"aggregate": aggregateView(r, agg, true)})
}

// aggregateMetadata checks set_metadata's {"metadata": {...}}: keys as
// Nova's metadata_with_null (1-255 characters of letters, digits and
// - _ : . space), values strings of at most 255 characters or null (remove
// the key); availability_zone as an aggregate's zone.
func aggregateMetadata(in map[string]any) (map[string]*string, error) {
	raw, ok := in["metadata"].(map[string]any)
	if len(in) != 1 || !ok {
		return nil, errdefs.InvalidArgument("Invalid input for field/attribute set_metadata. Value: {\"metadata\": {...}} is required.")
	}
	out := make(map[string]*string, len(raw))
	for k, v := range raw {
		if k == "" || len(k) > 255 || strings.IndexFunc(k, func(r rune) bool {
			return !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-_:. ", r)))
		}) >= 0 {
			return nil, errdefs.InvalidArgumentf("Invalid input for field/attribute metadata. Value: %q is not a valid key.", k)
		}
		switch val := v.(type) {
		case nil:
			out[k] = nil
		case string:
			if utf8.RuneCountInString(val) > 255 {
				return nil, errdefs.InvalidArgumentf("Invalid input for field/attribute metadata. Value: the value of %s is longer than 255 characters.", k)
			}
			if k == store.AggregateZoneKey && val != "" {
				if _, err := aggregateZone(val); err != nil {
					return nil, err
				}
			}
			out[k] = &val
		default:
			return nil, errdefs.InvalidArgumentf("Invalid input for field/attribute metadata. Value: %s must be a string or null (got %s).", k, fmt.Sprint(v))
		}
	}
	return out, nil
}
