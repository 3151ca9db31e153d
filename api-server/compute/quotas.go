package compute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"gorm.io/gorm"
)

// os-quota-sets, as Nova's DbQuotaDriver. A project's limit on a resource
// is what an admin set for it (PUT /os-quota-sets/{project}), else the
// default (Options.DefaultQuota for instances/cores/ram, Nova's defaults for
// the rest); a user's limit inside a project (PUT ...?user_id=) overrides
// the project's for that user only. -1 is unlimited. Usage is counted from
// the live servers, never stored. Creation, resize and GET /limits check
// instances/cores/ram against the project's limits and, where the user has
// limits of their own, against the user's limits and the user's servers.
// DELETE puts the project (with its users) or one user back to defaults.

// quotaKey is a Nova quota resource and the microversion that took it out
// of the API (0: still served).
type quotaKey struct {
	name      string
	removedAt int
}

// quotaKeys lists Nova's quota resources: 2.36 drops the network proxies'
// keys, 2.57 the personality ones.
func quotaKeys() []quotaKey {
	return []quotaKey{{"instances", 0}, {"cores", 0}, {"ram", 0}, {"metadata_items", 0}, {"key_pairs", 0},
		{"server_groups", 0}, {"server_group_members", 0}, {"fixed_ips", 36}, {"floating_ips", 36},
		{"security_groups", 36}, {"security_group_rules", 36}, {"injected_files", 57},
		{"injected_file_content_bytes", 57}, {"injected_file_path_bytes", 57}}
}

// servedQuotaKeys is the quota keys the API shows and accepts at v.
func servedQuotaKeys(v apiVersion) []string {
	var out []string
	for _, k := range quotaKeys() {
		if k.removedAt == 0 || !v.AtLeast(k.removedAt) {
			out = append(out, k.name)
		}
	}
	return out
}

// quotaDefaults is every resource's default limit.
func (s *Service) quotaDefaults() map[string]int {
	q := s.opts.DefaultQuota
	return map[string]int{"instances": q.Instances, "cores": q.Cores, "ram": q.RAM, "metadata_items": 128,
		"key_pairs": 100, "server_groups": 10, "server_group_members": 10, "fixed_ips": -1, "floating_ips": 10,
		"security_groups": 10, "security_group_rules": 20, "injected_files": 5,
		"injected_file_content_bytes": 10240, "injected_file_path_bytes": 255}
}

// overlayLimits returns base with the values of top replacing its own.
func overlayLimits(base, top map[string]int) map[string]int {
	out := make(map[string]int, len(base))
	for k, n := range base {
		out[k] = n
	}
	for k, n := range top {
		out[k] = n
	}
	return out
}

// projectQuota is the project's limits: the defaults under what was set.
func (s *Service) projectQuota(ctx context.Context, project string) (map[string]int, error) {
	set, err := s.st.QuotaLimits(ctx, project, "")
	if err != nil {
		return nil, err
	}
	return overlayLimits(s.quotaDefaults(), set), nil
}

// effectiveQuota is the limits of the project, or of one user in it when
// user is not "" (the project's, under the user's own).
func (s *Service) effectiveQuota(ctx context.Context, project, user string) (map[string]int, error) {
	limits, err := s.projectQuota(ctx, project)
	if err != nil || user == "" {
		return limits, err
	}
	own, err := s.st.QuotaLimits(ctx, project, user)
	if err != nil {
		return nil, err
	}
	return overlayLimits(limits, own), nil
}

// usageOf is the in-use count of each quota key: the counted resources,
// 0 for the rest (as Nova, which does not count key_pairs or
// server_group_members for quota display either).
func usageOf(u store.QuotaUsage) map[string]int {
	return map[string]int{"instances": u.Instances, "cores": u.Cores, "ram": u.RAM}
}

// Enforcement.

// quotaLevel is one level a request must fit: its limits, usage, and the
// limits set at that level itself.
type quotaLevel struct {
	limits map[string]int
	used   store.QuotaUsage
	own    map[string]int
}

// quotaCheck is the levels a creation or resize must fit: the project,
// then the user when the user has limits of their own.
type quotaCheck struct {
	project quotaLevel
	user    *quotaLevel
}

// loadQuotaCheck reads, in tx, the limits and usage of project and of
// user in it (user "" or without own limits: the project level only). A
// check that decides a create or resize runs in that write's transaction
// after lockComputeQuota, so what it counts cannot change before the write
// commits.
func (s *Service) loadQuotaCheck(tx *gorm.DB, project, user string) (*quotaCheck, error) {
	own, err := store.QuotaLimitsIn(tx, project, "")
	if err != nil {
		return nil, err
	}
	used, err := store.CountQuotaUsageIn(tx, project, "")
	if err != nil {
		return nil, err
	}
	c := &quotaCheck{project: quotaLevel{limits: overlayLimits(s.quotaDefaults(), own), used: used, own: own}}
	if user == "" {
		return c, nil
	}
	mine, err := store.QuotaLimitsIn(tx, project, user)
	if err != nil {
		return nil, err
	}
	if len(mine) == 0 {
		return c, nil
	}
	used, err = store.CountQuotaUsageIn(tx, project, user)
	if err != nil {
		return nil, err
	}
	c.user = &quotaLevel{limits: overlayLimits(c.project.limits, mine), used: used, own: mine}
	return c, nil
}

func (c *quotaCheck) levels() []quotaLevel {
	if c.user == nil {
		return []quotaLevel{c.project}
	}
	return []quotaLevel{c.project, *c.user}
}

// quotaAmount is a quantity of one counted resource.
type quotaAmount struct {
	name string
	n    int
}

// countedAmounts is u by resource name, in the order Nova checks them.
func countedAmounts(u store.QuotaUsage) [3]quotaAmount {
	return [3]quotaAmount{{"instances", u.Instances}, {"cores", u.Cores}, {"ram", u.RAM}}
}

// over returns Nova's message for the first limit taking want would
// cross (project before user, then instances, cores, ram), or "".
func (c *quotaCheck) over(want store.QuotaUsage) error {
	for _, l := range c.levels() {
		used := countedAmounts(l.used)
		for i, w := range countedAmounts(want) {
			lim := l.limits[w.name]
			if w.n > 0 && lim >= 0 && used[i].n+w.n > lim {
				return errdefs.QuotaExceededf("Quota exceeded for %s: Requested %d, but already used %d of %d %s",
					w.name, w.n, used[i].n, lim, w.name)
			}
		}
	}
	return nil
}

// room returns how many more servers taking per each fit, at most most.
func (c *quotaCheck) room(per store.QuotaUsage, most int) int {
	for _, l := range c.levels() {
		used := countedAmounts(l.used)
		for i, p := range countedAmounts(per) {
			lim := l.limits[p.name]
			if p.n <= 0 || lim < 0 {
				continue
			}
			most = min(most, max(0, lim-used[i].n)/p.n)
		}
	}
	return most
}

// serversOf is n servers of flavor f.
func serversOf(f *store.Flavor, n int) store.QuotaUsage {
	return store.QuotaUsage{Instances: n, Cores: n * f.VCPUs, RAM: n * f.MemoryMB}
}

// quotaUnchecked is the refusal when the quota cannot be read (cause):
// refusing is safer than letting a project past its limits.
func quotaUnchecked(cause error) error {
	return errdefs.Wrap(cause, errdefs.ErrQuotaExceeded, "Quota exceeded: the quota could not be checked, try again later.")
}

// Handlers.

// quotaProject is the {project} the caller may read: their own, or any
// for admins.
func quotaProject(w http.ResponseWriter, r *http.Request, action string) (string, bool) {
	creds := auth.FromContext(r.Context())
	project := r.PathValue("project")
	if project != creds.ProjectID && !creds.IsAdmin() {
		writeFault(w, errdefs.Forbiddenf("Policy doesn't allow os_compute_api:os-quota-sets:%s to be performed.", action))
		return "", false
	}
	return project, true
}

// quotaAdmin answers 403 in Nova's words unless the caller is an admin.
func quotaAdmin(w http.ResponseWriter, r *http.Request, action string) bool {
	if !auth.FromContext(r.Context()).IsAdmin() {
		writeFault(w, errdefs.Forbiddenf("Policy doesn't allow os_compute_api:os-quota-sets:%s to be performed.", action))
		return false
	}
	return true
}

// quotaSetView is the body of a quota set at v; id "" leaves it out (the
// PUT answer, whose Tempest schema forbids it).
func quotaSetView(id string, v apiVersion, value func(key string) any) map[string]any {
	out := map[string]any{}
	if id != "" {
		out["id"] = id
	}
	for _, k := range servedQuotaKeys(v) {
		out[k] = value(k)
	}
	return map[string]any{"quota_set": out}
}

func limitOf(limits map[string]int) func(string) any {
	return func(k string) any { return limits[k] }
}

func (s *Service) quotaFailed(w http.ResponseWriter, project string, err error) {
	s.log.Error("quota", "project", project, "error", err)
	writeError(w, http.StatusInternalServerError, "Unexpected API Error: the quota could not be read.")
}

// quotaUnreadable is a quota that could not be read (cause): Nova's 500.
func quotaUnreadable(cause error) error {
	return errdefs.Wrap(cause, errdefs.ErrInternal, "Unexpected API Error: the quota could not be read.")
}

// showQuotaSet serves GET /os-quota-sets/{project}[?user_id=]: the limits
// in force for the project or the user.
func (s *Service) showQuotaSet(w http.ResponseWriter, r *http.Request) {
	project, ok := quotaProject(w, r, "show")
	if !ok {
		return
	}
	limits, err := s.effectiveQuota(r.Context(), project, r.URL.Query().Get("user_id"))
	if err != nil {
		s.quotaFailed(w, project, err)
		return
	}
	writeJSON(w, http.StatusOK, quotaSetView(project, versionOf(r.Context()), limitOf(limits)))
}

// showQuotaDefaults serves GET /os-quota-sets/{project}/defaults, to
// anyone (Nova's defaults policy is "@": they are the same for all).
func (s *Service) showQuotaDefaults(w http.ResponseWriter, r *http.Request) {
	project := r.PathValue("project")
	writeJSON(w, http.StatusOK, quotaSetView(project, versionOf(r.Context()), limitOf(s.quotaDefaults())))
}

// showQuotaDetail serves GET /os-quota-sets/{project}/detail[?user_id=]:
// each value as {limit, in_use, reserved}, in_use counted from the live
// servers of the project (or the user). Nothing is ever reserved.
func (s *Service) showQuotaDetail(w http.ResponseWriter, r *http.Request) {
	project, ok := quotaProject(w, r, "detail")
	if !ok {
		return
	}
	ctx, user := r.Context(), r.URL.Query().Get("user_id")
	limits, err := s.effectiveQuota(ctx, project, user)
	if err != nil {
		s.quotaFailed(w, project, err)
		return
	}
	u, err := s.st.CountQuotaUsage(ctx, project, user)
	if err != nil {
		s.quotaFailed(w, project, err)
		return
	}
	used := usageOf(u)
	if used["key_pairs"], err = s.keypairsInUse(r, project, user); err != nil {
		s.quotaFailed(w, project, err)
		return
	}
	writeJSON(w, http.StatusOK, quotaSetView(project, versionOf(ctx), func(k string) any {
		return map[string]int{"limit": limits[k], "in_use": used[k], "reserved": 0}
	}))
}

// keypairsInUse is the key_pairs usage a detail shows. Keypairs belong to
// users, so it is the asked user's count, or the caller's in their own
// project; an admin's look at another project as a whole shows 0.
func (s *Service) keypairsInUse(r *http.Request, project, user string) (int, error) {
	if creds := auth.FromContext(r.Context()); user == "" && creds.ProjectID == project {
		user = creds.UserID
	}
	if user == "" {
		return 0, nil
	}
	return s.st.CountKeypairs(r.Context(), user)
}

// keypairLimit is the key_pairs quota of user in project: the user's own
// limit, else the project's, else the default (-1 unlimited). Keypair
// creation checks CountKeypairs against it.
func (s *Service) keypairLimit(ctx context.Context, project, user string) (int, error) {
	limits, err := s.effectiveQuota(ctx, project, user)
	if err != nil {
		return 0, err
	}
	return limits["key_pairs"], nil
}

// updateQuotaSet serves PUT /os-quota-sets/{project}[?user_id=] (admin):
// every value is checked before any is written; without "force" a limit
// must cover what is in use (and a user's must fit in the project's).
func (s *Service) updateQuotaSet(w http.ResponseWriter, r *http.Request) {
	if !quotaAdmin(w, r, "update") {
		return
	}
	ctx, project, user := r.Context(), r.PathValue("project"), r.URL.Query().Get("user_id")
	v := versionOf(ctx)
	body, ok := decodeQuotaBody(w, r)
	if !ok {
		return
	}
	upd, err := parseQuotaUpdate(body, v)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.st.WithContext(ctx).First(&store.Project{}, "id = ?", project).Error; err != nil {
		if errors.Is(store.NotFound(err, project), store.ErrNotFound) {
			writeFault(w, errdefs.InvalidArgumentf("Project ID %s is not a valid project.", project))
			return
		}
		s.quotaFailed(w, project, err)
		return
	}
	if !upd.force {
		if err := s.checkSettable(ctx, project, user, upd.limits); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if err := s.st.SetQuotaLimits(ctx, project, user, upd.limits); err != nil {
		s.quotaFailed(w, project, err)
		return
	}
	s.log.Info("quota set", "project", project, "user", user, "limits", upd.limits, "force", upd.force)
	limits, err := s.effectiveQuota(ctx, project, user)
	if err != nil {
		s.quotaFailed(w, project, err)
		return
	}
	writeJSON(w, http.StatusOK, quotaSetView("", v, limitOf(limits)))
}

// deleteQuotaSet serves DELETE /os-quota-sets/{project}[?user_id=]
// (admin): the project (and its users) or the user back to defaults; 202
// as Nova.
func (s *Service) deleteQuotaSet(w http.ResponseWriter, r *http.Request) {
	if !quotaAdmin(w, r, "delete") {
		return
	}
	project, user := r.PathValue("project"), r.URL.Query().Get("user_id")
	if err := s.st.DeleteQuotaLimits(r.Context(), project, user); err != nil {
		s.quotaFailed(w, project, err)
		return
	}
	s.log.Info("quota reset to defaults", "project", project, "user", user)
	noContent(w, http.StatusAccepted)
}

// The PUT body.

// quotaUpdate is a validated PUT body.
type quotaUpdate struct {
	limits map[string]int
	force  bool
}

// decodeQuotaBody parses a JSON body keeping numbers exact, so 1.5 and
// 1e3 can be told from integers.
func decodeQuotaBody(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.UseNumber()
	var body map[string]any
	if err := dec.Decode(&body); err != nil || body == nil {
		msg := "Malformed request body: the body must be a JSON object."
		if err != nil {
			msg = "Malformed request body: " + err.Error()
		}
		writeFault(w, errdefs.InvalidArgument(msg))
		return nil, false
	}
	return body, true
}

// parseQuotaUpdate validates body as Nova's quota_sets.update schema at v
// and returns Nova's message for the first fault.
func parseQuotaUpdate(body map[string]any, v apiVersion) (*quotaUpdate, error) {
	raw, ok := body["quota_set"]
	if !ok {
		return nil, errdefs.InvalidArgument("Invalid input for field/attribute body. 'quota_set' is a required property")
	}
	if extra := quotaUnexpected(body, map[string]bool{"quota_set": true}); extra != "" {
		return nil, errdefs.InvalidArgument("Invalid input for field/attribute body. " + extra)
	}
	set, ok := raw.(map[string]any)
	if !ok {
		b, _ := json.Marshal(raw)
		return nil, errdefs.InvalidArgumentf("Invalid input for field/attribute quota_set. Value: %s. %s is not of type 'object'", b, b)
	}
	allowed := map[string]bool{"force": true}
	for _, k := range servedQuotaKeys(v) {
		allowed[k] = true
	}
	if !v.AtLeast(36) {
		// Accepted by the 2.1 schema, then refused (nova-network only).
		allowed["networks"] = true
	}
	if extra := quotaUnexpected(set, allowed); extra != "" {
		return nil, errdefs.InvalidArgument("Invalid input for field/attribute quota_set. " + extra)
	}
	if _, ok := set["networks"]; ok {
		return nil, errdefs.InvalidArgument("The networks quota has been removed")
	}
	upd := &quotaUpdate{limits: map[string]int{}}
	for _, k := range sortedBodyKeys(set) {
		if k == "force" {
			b, ok := novaBool(set[k])
			if !ok {
				return nil, errdefs.InvalidArgumentf("Invalid input for field/attribute force. Value: %v. %v is not a valid boolean", set[k], set[k])
			}
			upd.force = b
			continue
		}
		n, err := quotaValue(k, set[k])
		if err != nil {
			return nil, err
		}
		upd.limits[k] = n
	}
	return upd, nil
}

// quotaUnexpected returns jsonschema's additionalProperties message for the
// keys of m not in allowed, or "".
func quotaUnexpected(m map[string]any, allowed map[string]bool) string {
	var extra []string
	for _, k := range sortedBodyKeys(m) {
		if !allowed[k] {
			extra = append(extra, "'"+k+"'")
		}
	}
	switch len(extra) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf("Additional properties are not allowed (%s was unexpected)", extra[0])
	}
	return fmt.Sprintf("Additional properties are not allowed (%s were unexpected)", strings.Join(extra, ", "))
}

func sortedBodyKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var quotaNumber = regexp.MustCompile(`^-?[0-9]+$`)

// quotaValue parses one limit: an integer or a string of digits (OSC and
// Tempest send both), from -1 (unlimited) to MAX_INT.
func quotaValue(key string, raw any) (int, error) {
	var text string
	switch x := raw.(type) {
	case json.Number:
		text = x.String()
		if !quotaNumber.MatchString(text) {
			return 0, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %s. %s is not of type 'integer', 'string'", key, text, text)
		}
	case string:
		text = x
		if !quotaNumber.MatchString(text) {
			return 0, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %s. '%s' does not match '^-?[0-9]+$'", key, text, text)
		}
	default:
		b, _ := json.Marshal(raw)
		return 0, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %s. %s is not of type 'integer', 'string'", key, b, b)
	}
	n, err := strconv.ParseInt(text, 10, 64)
	switch {
	case err != nil || n > 0x7FFFFFFF:
		return 0, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %s. %s is greater than the maximum of 2147483647", key, text, text)
	case n < -1:
		return 0, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %s. %s is less than the minimum of -1", key, text, text)
	}
	return int(n), nil
}

// novaBool accepts what Nova's parameter_types.boolean does.
func novaBool(raw any) (bool, bool) {
	if b, ok := raw.(bool); ok {
		return b, true
	}
	s, ok := raw.(string)
	if !ok {
		return false, false
	}
	switch strings.ToLower(s) {
	case "true", "1", "on", "yes":
		return true, true
	case "false", "0", "off", "no":
		return false, true
	}
	return false, false
}

// checkSettable applies Nova's get_settable_quotas bounds to a PUT without
// force: a limit out of bounds is an InvalidArgument. A project's limit must cover its usage and what its users'
// limits already hand out; a user's must cover the user's usage and fit
// in what the project has not handed to other users.
func (s *Service) checkSettable(ctx context.Context, project, user string, want map[string]int) error {
	proj, err := s.projectQuota(ctx, project)
	if err != nil {
		return quotaUnreadable(err)
	}
	rows, err := s.st.UserQuotaLimits(ctx, project)
	if err != nil {
		return quotaUnreadable(err)
	}
	handedOut, mine := map[string]int{}, map[string]int{}
	for _, row := range rows {
		if row.HardLimit > 0 {
			handedOut[row.Resource] += row.HardLimit
		}
		if row.UserID == user {
			mine[row.Resource] = row.HardLimit
		}
	}
	u, err := s.st.CountQuotaUsage(ctx, project, user)
	if err != nil {
		return quotaUnreadable(err)
	}
	used := usageOf(u)
	for _, k := range quotaKeys() {
		n, ok := want[k.name]
		if !ok {
			continue
		}
		minimum, maximum := used[k.name], -1
		switch {
		case user == "" && proj[k.name] >= 0:
			minimum = max(minimum, handedOut[k.name])
		case user != "" && proj[k.name] >= 0:
			maximum = max(0, proj[k.name]-handedOut[k.name]+max(0, mine[k.name]))
		}
		if msg := settableMessage(k.name, n, minimum, maximum); msg != "" {
			return errdefs.InvalidArgument(msg)
		}
	}
	return nil
}

// settableMessage is Nova's _validate_quota_limit: -1 counts as infinite.
func settableMessage(key string, limit, minimum, maximum int) string {
	unlimited := limit == -1
	if !unlimited && limit < minimum {
		return fmt.Sprintf("Quota limit %d for %s must be greater than or equal to already used and reserved %d.", limit, key, minimum)
	}
	if maximum != -1 && (unlimited || limit > maximum) {
		return fmt.Sprintf("Quota limit %d for %s must be less than or equal to %d.", limit, key, maximum)
	}
	return ""
}

// limitsFor is what GET /limits reports for the caller in project: the
// limits in force (the user's own where set) and, for instances, cores and
// RAM, the usage they are counted against — the user's servers where the
// user has a limit of their own on that resource, else the project's.
func (s *Service) limitsFor(ctx context.Context, project, user string) (map[string]int, store.QuotaUsage, error) {
	qc, err := s.loadQuotaCheck(s.st.WithContext(ctx), project, user)
	if err != nil {
		return nil, store.QuotaUsage{}, err
	}
	if qc.user == nil {
		return qc.project.limits, qc.project.used, nil
	}
	used := qc.project.used
	if _, ok := qc.user.own["instances"]; ok {
		used.Instances = qc.user.used.Instances
	}
	if _, ok := qc.user.own["cores"]; ok {
		used.Cores = qc.user.used.Cores
	}
	if _, ok := qc.user.own["ram"]; ok {
		used.RAM = qc.user.used.RAM
	}
	return qc.user.limits, used, nil
}

// metadataLimit is the metadata_items quota of the caller's project (and
// user), -1 for unlimited; when it cannot be read it writes a 500.
func (s *Service) metadataLimit(w http.ResponseWriter, r *http.Request) (int, bool) {
	creds := auth.FromContext(r.Context())
	limits, err := s.effectiveQuota(r.Context(), creds.ProjectID, creds.UserID)
	if err != nil {
		s.log.Error("metadata quota", "project", creds.ProjectID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not read the quota.")
		return 0, false
	}
	return limits["metadata_items"], true
}

// metadataOverQuota is Nova's 403 for more than max metadata items.
func metadataOverQuota(max int) error {
	return errdefs.QuotaExceededf("Quota exceeded for metadata items: at most %d allowed.", max)
}

// metadataFits checks n metadata items against the metadata_items quota
// of the caller's project (and user), writing Nova's 403 when over (-1 is
// unlimited) or a 500 when the quota cannot be read. It serves creates
// and rebuilds, whose items are written with the server's row; updates of
// an existing server's items check under its row lock (saveMetadata).
func (s *Service) metadataFits(w http.ResponseWriter, r *http.Request, n int) bool {
	max, ok := s.metadataLimit(w, r)
	if !ok {
		return false
	}
	if max >= 0 && n > max {
		writeFault(w, metadataOverQuota(max))
		return false
	}
	return true
}
