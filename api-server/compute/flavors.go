package compute

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/limits"
	"github.com/capsule-cloud/capsule/store"
)

// findFlavor looks a live flavor up by API id.
func (s *Service) findFlavor(ctx context.Context, id string) (*store.Flavor, error) {
	var f store.Flavor
	err := s.st.WithContext(ctx).Preload("ExtraSpecs").Where("flavor_id = ? AND deleted = ?", id, false).First(&f).Error
	if err != nil {
		return nil, store.NotFound(err, "flavor "+id)
	}
	return &f, nil
}

// flavorVisible: public flavors to all; private ones to admins and the
// projects given access.
func (s *Service) flavorVisible(ctx context.Context, f *store.Flavor) bool {
	creds := auth.FromContext(ctx)
	if f.IsPublic || creds.IsAdmin() {
		return true
	}
	var n int64
	s.st.WithContext(ctx).Model(&store.FlavorAccess{}).Where("flavor_id = ? AND project_id = ?", f.ID, creds.ProjectID).Count(&n)
	return n > 0
}

func (s *Service) flavorView(r *http.Request, f *store.Flavor) map[string]any {
	var swap any = ""
	if f.SwapMB > 0 || versionOf(r.Context()).AtLeast(75) {
		swap = f.SwapMB
	}
	out := map[string]any{"id": f.FlavorID, "name": f.Name, "ram": f.MemoryMB, "vcpus": f.VCPUs, "disk": f.RootGB,
		"swap": swap, "OS-FLV-EXT-DATA:ephemeral": f.EphemeralGB, "OS-FLV-DISABLED:disabled": f.Disabled,
		"os-flavor-access:is_public": f.IsPublic, "rxtx_factor": f.RxtxFactor, "links": s.links(r, "flavors", f.FlavorID)}
	if versionOf(r.Context()).AtLeast(55) {
		out["description"] = f.Description
	}
	// 2.61: the extra specs in the flavor (everyone may list them, as
	// with Nova's default policy).
	if versionOf(r.Context()).AtLeast(61) {
		out["extra_specs"] = specsMap(f)
	}
	return out
}

func (s *Service) loadFlavor(w http.ResponseWriter, r *http.Request) (*store.Flavor, bool) {
	f, err := s.findFlavor(r.Context(), r.PathValue("id"))
	if err != nil || !s.flavorVisible(r.Context(), f) {
		writeFault(w, errdefs.NotFoundf("Flavor %s could not be found.", r.PathValue("id")))
		return nil, false
	}
	return f, true
}

func parseBoolish(v string) (val bool, isNone bool, ok bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "t", "true", "yes", "1", "on", "y":
		return true, false, true
	case "f", "false", "no", "0", "off", "n":
		return false, false, true
	case "none":
		return false, true, true
	}
	return false, false, false
}

// flavorPublicFilter reads is_public as Nova does: only admins may filter
// on it (true: public plus their project's private flavors, false: private
// only, none: all); everyone else always gets the default, true. pub is
// nil for "all".
func (s *Service) flavorPublicFilter(creds *auth.Credentials, v string) (pub *bool, ok bool) {
	yes := true
	if !creds.IsAdmin() {
		return &yes, true
	}
	if v == "" {
		return &yes, true
	}
	b, none, ok := parseBoolish(v)
	if !ok {
		return nil, false
	}
	if none {
		return nil, true
	}
	return &b, true
}

// flavorListed applies the is_public filter: true lists public flavors and
// the private ones the caller's project was given access to.
func (s *Service) flavorListed(ctx context.Context, f *store.Flavor, pub *bool) bool {
	switch {
	case pub == nil:
		return true
	case !*pub:
		return !f.IsPublic
	case f.IsPublic:
		return true
	}
	var n int64
	s.st.WithContext(ctx).Model(&store.FlavorAccess{}).Where("flavor_id = ? AND project_id = ?", f.ID, auth.FromContext(ctx).ProjectID).Count(&n)
	return n > 0
}

func (s *Service) listFlavors(detail bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		creds := auth.FromContext(ctx)
		q := r.URL.Query()
		db := s.st.WithContext(ctx).Preload("ExtraSpecs").Where("deleted = ?", false)
		pub, ok := s.flavorPublicFilter(creds, q.Get("is_public"))
		if !ok {
			writeFault(w, errdefs.InvalidArgument("Invalid is_public filter ["+q.Get("is_public")+"]"))
			return
		}
		if !creds.IsAdmin() {
			db = db.Where("disabled = ?", false)
		}
		if v := q.Get("minRam"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				writeFault(w, errdefs.InvalidArgument("Invalid minRam filter ["+v+"]"))
				return
			}
			db = db.Where("memory_mb >= ?", n)
		}
		if v := q.Get("minDisk"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				writeFault(w, errdefs.InvalidArgument("Invalid minDisk filter ["+v+"]"))
				return
			}
			db = db.Where("root_gb >= ?", n)
		}
		var fls []store.Flavor
		if err := db.Find(&fls).Error; err != nil {
			writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
			return
		}
		visible := fls[:0]
		for i := range fls {
			if s.flavorListed(ctx, &fls[i], pub) {
				visible = append(visible, fls[i])
			}
		}
		fls = visible
		key := q.Get("sort_key")
		desc := q.Get("sort_dir") == "desc"
		sort.SliceStable(fls, func(i, j int) bool {
			var less bool
			switch key {
			case "name":
				less = fls[i].Name < fls[j].Name
			case "memory_mb":
				less = fls[i].MemoryMB < fls[j].MemoryMB
			case "vcpus":
				less = fls[i].VCPUs < fls[j].VCPUs
			case "root_gb":
				less = fls[i].RootGB < fls[j].RootGB
			default:
				less = fls[i].FlavorID < fls[j].FlavorID
			}
			if desc {
				return !less
			}
			return less
		})
		fls, limit, more, ok := pageOf(w, r, fls, func(f *store.Flavor) string { return f.FlavorID })
		if !ok {
			return
		}
		items := make([]any, 0, len(fls))
		for i := range fls {
			if detail {
				items = append(items, s.flavorView(r, &fls[i]))
			} else {
				item := map[string]any{"id": fls[i].FlavorID, "name": fls[i].Name, "links": s.links(r, "flavors", fls[i].FlavorID)}
				if versionOf(ctx).AtLeast(55) {
					item["description"] = fls[i].Description
				}
				items = append(items, item)
			}
		}
		out := map[string]any{"flavors": items}
		if more && limit > 0 {
			out["flavors_links"] = s.nextLinks(r, "flavors", detail, limit, fls[len(fls)-1].FlavorID)
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func (s *Service) showFlavor(w http.ResponseWriter, r *http.Request) {
	f, ok := s.loadFlavor(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"flavor": s.flavorView(r, f)})
}

func numField(v any) (int, bool) {
	switch x := v.(type) {
	case float64:
		if x != float64(int(x)) {
			return 0, false
		}
		return int(x), true
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(x))
		return n, err == nil
	}
	return 0, false
}

func (s *Service) createFlavor(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Flavor map[string]any `json:"flavor"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	in := req.Flavor
	if in == nil {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute flavor. Value: 'flavor' is a required property"))
		return
	}
	name, _ := in["name"].(string)
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 255 {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute name. Flavor names must be 1-255 characters."))
		return
	}
	f := store.Flavor{Name: name, RxtxFactor: 1.0, IsPublic: true}
	for _, fld := range []struct {
		key string
		dst *int
		min int
		req bool
	}{{"ram", &f.MemoryMB, 1, true}, {"vcpus", &f.VCPUs, 1, true}, {"disk", &f.RootGB, 0, true},
		{"swap", &f.SwapMB, 0, false}, {"OS-FLV-EXT-DATA:ephemeral", &f.EphemeralGB, 0, false}} {
		v, present := in[fld.key]
		if !present || v == nil {
			if fld.req {
				writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute flavor. Value: '%s' is a required property", fld.key))
				return
			}
			continue
		}
		n, ok := numField(v)
		if !ok || n < fld.min {
			writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value must be an integer >= %d.", fld.key, fld.min))
			return
		}
		*fld.dst = n
	}
	if v, ok := in["rxtx_factor"]; ok && v != nil {
		x, ok := v.(float64)
		if !ok || x <= 0 {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute rxtx_factor."))
			return
		}
		f.RxtxFactor = x
	}
	if v, ok := in["os-flavor-access:is_public"]; ok && v != nil {
		switch b := v.(type) {
		case bool:
			f.IsPublic = b
		case string:
			val, _, ok := parseBoolish(b)
			if !ok {
				writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute os-flavor-access:is_public."))
				return
			}
			f.IsPublic = val
		default:
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute os-flavor-access:is_public."))
			return
		}
	}
	if d, ok := in["description"].(string); ok && versionOf(r.Context()).AtLeast(55) {
		f.Description = &d
	}
	switch id := in["id"].(type) {
	case nil:
		f.FlavorID = uuid.NewString()
	case string:
		if strings.TrimSpace(id) == "" || len(id) > 255 {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute id."))
			return
		}
		f.FlavorID = id
	case float64:
		f.FlavorID = strconv.Itoa(int(id))
	default:
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute id."))
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		var n int64
		tx.Model(&store.Flavor{}).Where("deleted = ? AND (flavor_id = ? OR name = ?)", false, f.FlavorID, f.Name).Count(&n)
		if n > 0 {
			return store.ErrConflict
		}
		return tx.Create(&f).Error
	})
	if errors.Is(err, store.ErrConflict) {
		writeFault(w, errdefs.Conflictf("Flavor with name %s or ID %s already exists.", f.Name, f.FlavorID))
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"flavor": s.flavorView(r, &f)})
}

func (s *Service) deleteFlavor(w http.ResponseWriter, r *http.Request) {
	f, ok := s.loadFlavor(w, r)
	if !ok {
		return
	}
	// Soft delete: servers keep a copy of their flavor, and migrations
	// refer to the row id.
	if err := s.st.WithContext(r.Context()).Model(&store.Flavor{}).Where("id = ?", f.ID).Update("deleted", true).Error; err != nil {
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	noContent(w, http.StatusAccepted)
}

func (s *Service) updateFlavor(w http.ResponseWriter, r *http.Request) {
	if !versionOf(r.Context()).AtLeast(55) {
		writeFault(w, errdefs.NotFound("The resource could not be found."))
		return
	}
	f, ok := s.loadFlavor(w, r)
	if !ok {
		return
	}
	var req struct {
		Flavor struct {
			Description *string `json:"description"`
		} `json:"flavor"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	f.Description = req.Flavor.Description
	s.st.WithContext(r.Context()).Model(&store.Flavor{}).Where("id = ?", f.ID).Update("description", f.Description)
	writeJSON(w, http.StatusOK, map[string]any{"flavor": s.flavorView(r, f)})
}

// Extra specs. From microversion 2.86 (Nova's extra-spec validation) keys
// in the quota:, hw: and capsule: namespaces are validated with
// limits.Parse (Nova's names and units; an unknown key or a bad value is a
// 400 naming the key), always against the flavor's whole resulting set,
// since some keys only make sense together (a total disk throttle excludes
// read/write ones, a NIC peak needs its average). Below 2.86 any key and
// value is stored as given, as Nova does (clients set values such as
// hw:cpu_policy=CPU-POLICY on flavors they never boot); a server is then
// refused a flavor with invalid specs at create and resize (400), before
// anything reaches a host. Keys in other namespaces are stored as given at
// every microversion. A flavor is created without extra specs (they are
// set afterwards, as in Nova), so creation has nothing to validate.

func specsMap(f *store.Flavor) map[string]string {
	m := map[string]string{}
	for _, e := range f.ExtraSpecs {
		m[e.Key] = e.Value
	}
	return m
}

func (s *Service) listExtraSpecs(w http.ResponseWriter, r *http.Request) {
	f, ok := s.loadFlavor(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"extra_specs": specsMap(f)})
}

func (s *Service) saveSpecs(w http.ResponseWriter, r *http.Request, f *store.Flavor, in map[string]any) (map[string]string, bool) {
	out := map[string]string{}
	for k, v := range in {
		str, ok := v.(string)
		if !ok {
			if n, isNum := v.(float64); isNum {
				str, ok = strconv.FormatFloat(n, 'f', -1, 64), true
			}
		}
		if !ok || k == "" || len(k) > 255 || len(str) > 255 {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute extra_specs. Keys and values must be strings of 1-255 characters."))
			return nil, false
		}
		out[k] = str
	}
	merged := specsMap(f)
	for k, v := range out {
		merged[k] = v
	}
	if _, err := limits.Parse(merged, f.VCPUs); err != nil && versionOf(r.Context()).AtLeast(86) {
		writeFault(w, errdefs.InvalidArgument("Invalid extra_specs: "+err.Error()))
		return nil, false
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		for k, v := range out {
			if err := tx.Save(&store.FlavorExtraSpec{FlavorID: f.ID, Key: k, Value: v}).Error; err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return nil, false
	}
	return out, true
}

func (s *Service) setExtraSpecs(w http.ResponseWriter, r *http.Request) {
	f, ok := s.loadFlavor(w, r)
	if !ok {
		return
	}
	var req struct {
		ExtraSpecs map[string]any `json:"extra_specs"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if req.ExtraSpecs == nil {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute extra_specs. Value: 'extra_specs' is a required property"))
		return
	}
	out, ok := s.saveSpecs(w, r, f, req.ExtraSpecs)
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"extra_specs": out})
	}
}

func (s *Service) showExtraSpec(w http.ResponseWriter, r *http.Request) {
	f, ok := s.loadFlavor(w, r)
	if !ok {
		return
	}
	key := r.PathValue("key")
	v, found := specsMap(f)[key]
	if !found {
		writeFault(w, errdefs.NotFoundf("Flavor %s has no extra specs with key %s.", f.FlavorID, key))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{key: v})
}

func (s *Service) putExtraSpec(w http.ResponseWriter, r *http.Request) {
	f, ok := s.loadFlavor(w, r)
	if !ok {
		return
	}
	var in map[string]any
	if !decodeBody(w, r, &in) {
		return
	}
	key := r.PathValue("key")
	if _, found := in[key]; !found || len(in) != 1 {
		writeFault(w, errdefs.InvalidArgument("Request body and URI mismatch"))
		return
	}
	out, ok := s.saveSpecs(w, r, f, in)
	if ok {
		writeJSON(w, http.StatusOK, out)
	}
}

func (s *Service) deleteExtraSpec(w http.ResponseWriter, r *http.Request) {
	f, ok := s.loadFlavor(w, r)
	if !ok {
		return
	}
	key := r.PathValue("key")
	// Removing a key may break a combination (the average a NIC peak
	// needs). A flavor that was valid must stay so; one that already
	// was not (older than validation) may be cleaned up key by key.
	before := specsMap(f)
	if _, err := limits.Parse(before, f.VCPUs); err == nil && versionOf(r.Context()).AtLeast(86) {
		delete(before, key)
		if _, err := limits.Parse(before, f.VCPUs); err != nil {
			writeFault(w, errdefs.InvalidArgument("Invalid extra_specs after removing "+key+": "+err.Error()))
			return
		}
	}
	res := s.st.WithContext(r.Context()).Where("flavor_id = ? AND key = ?", f.ID, key).Delete(&store.FlavorExtraSpec{})
	if res.Error != nil {
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	if res.RowsAffected == 0 {
		writeFault(w, errdefs.NotFoundf("Flavor %s has no extra specs with key %s.", f.FlavorID, key))
		return
	}
	noContent(w, http.StatusOK)
}

func (s *Service) listFlavorAccess(w http.ResponseWriter, r *http.Request) {
	f, ok := s.loadFlavor(w, r)
	if !ok {
		return
	}
	if f.IsPublic {
		writeFault(w, errdefs.NotFound("Access list not available for public flavors."))
		return
	}
	s.writeFlavorAccess(w, r, f)
}

func (s *Service) writeFlavorAccess(w http.ResponseWriter, r *http.Request, f *store.Flavor) {
	var acc []store.FlavorAccess
	s.st.WithContext(r.Context()).Where("flavor_id = ?", f.ID).Find(&acc)
	items := []map[string]string{}
	for _, a := range acc {
		items = append(items, map[string]string{"flavor_id": f.FlavorID, "tenant_id": a.ProjectID})
	}
	writeJSON(w, http.StatusOK, map[string]any{"flavor_access": items})
}

func (s *Service) flavorAction(w http.ResponseWriter, r *http.Request) {
	f, ok := s.loadFlavor(w, r)
	if !ok {
		return
	}
	var body map[string]json.RawMessage
	if !decodeBody(w, r, &body) {
		return
	}
	for name, raw := range body {
		var arg struct {
			Tenant string `json:"tenant"`
		}
		if err := json.Unmarshal(raw, &arg); err != nil || arg.Tenant == "" {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute tenant."))
			return
		}
		if f.IsPublic {
			writeFault(w, errdefs.Conflict("Can not add access to a public flavor."))
			return
		}
		db := s.st.WithContext(r.Context())
		switch name {
		case "addTenantAccess":
			if err := db.Create(&store.FlavorAccess{FlavorID: f.ID, ProjectID: arg.Tenant}).Error; err != nil {
				writeFault(w, errdefs.Conflictf("Flavor access already exists for flavor %s and project %s combination.", f.FlavorID, arg.Tenant))
				return
			}
		case "removeTenantAccess":
			res := db.Where("flavor_id = ? AND project_id = ?", f.ID, arg.Tenant).Delete(&store.FlavorAccess{})
			if res.RowsAffected == 0 {
				writeFault(w, errdefs.NotFoundf("Flavor access not found for %s / %s combination.", f.FlavorID, arg.Tenant))
				return
			}
		default:
			writeFault(w, errdefs.InvalidArgument("There is no such action: "+name))
			return
		}
		s.writeFlavorAccess(w, r, f)
		return
	}
	writeFault(w, errdefs.InvalidArgument("Malformed request body"))
}
