package compute

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// Host events (a Capsule extension, admin only): the alarms and OOM
// kills the agents raised, newest first.
//
//	GET /v2.1/os-host-events?host=&instance_uuid=&kind=&severity=&since=<ISO 8601>&limit=
const (
	defaultEventLimit = 100
	maxEventLimit     = 1000
	// eventTimeFmt is ISO 8601 in UTC with microseconds, as the
	// database keeps them.
	eventTimeFmt = "2006-01-02T15:04:05.000000Z"
)

// sinceFormats are the ISO 8601 forms since= accepts; without a zone the
// time is UTC, as Nova's changes-since.
var sinceFormats = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"}

func parseSince(s string) (time.Time, bool) {
	for _, f := range sinceFormats {
		if t, err := time.Parse(f, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

func (s *Service) listHostEvents(w http.ResponseWriter, r *http.Request) {
	qs := r.URL.Query()
	q := s.st.WithContext(r.Context()).Model(&store.HostEvent{})
	for param, col := range map[string]string{"host": "host", "instance_uuid": "instance_id", "kind": "kind", "severity": "severity"} {
		if v := qs.Get(param); v != "" {
			q = q.Where(col+" = ?", v)
		}
	}
	if v := qs.Get("since"); v != "" {
		since, ok := parseSince(strings.TrimSpace(v))
		if !ok {
			writeFault(w, errdefs.InvalidArgument("Invalid since "+strconv.Quote(v)+": an ISO 8601 time is expected, e.g. 2026-11-25T12:00:00Z."))
			return
		}
		q = q.Where("at >= ?", since)
	}
	limit := defaultEventLimit
	if v := qs.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeFault(w, errdefs.InvalidArgument("Invalid limit "+strconv.Quote(v)+": a positive integer is expected."))
			return
		}
		limit = min(n, maxEventLimit)
	}
	var rows []store.HostEvent
	if err := q.Order("at DESC").Order("id DESC").Limit(limit).Find(&rows).Error; err != nil {
		s.log.Error("list host events", "err", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	out := make([]map[string]any, 0, len(rows))
	for _, e := range rows {
		var inst any
		if e.InstanceID != "" {
			inst = e.InstanceID
		}
		out = append(out, map[string]any{"id": e.UUID, "host": e.Host, "instance_uuid": inst, "project_id": e.ProjectID,
			"kind": e.Kind, "severity": e.Severity, "message": e.Message, "value": e.Value, "threshold": e.Threshold,
			"created_at": e.At.UTC().Format(eventTimeFmt)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"host_events": out})
}
