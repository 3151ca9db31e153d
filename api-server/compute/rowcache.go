package compute

import (
	"database/sql"
	"errors"
	"net/http"
	"sync"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// rowCacheSize bounds the rows a show keeps: a few thousand servers polled
// at once is far more than one API process serves.
const rowCacheSize = 4096

// rowCache keeps the instance rows the show served, each with the
// row_version it was read at. A client polling a building server GETs it
// every few tens of milliseconds, and the full row (some 75 columns, each
// scanned by reflection) costs five times a one-column query: the show
// asks for the version only and reads the row again only when it changed.
//
// The version is the database's (a trigger raises it at every UPDATE of
// the row, see store migration 42), not this process's: a write by
// another API process, the conductor or raw SQL invalidates the entry at
// this process's next GET, with no message between processes.
type rowCache struct {
	mu   sync.Mutex
	max  int
	rows map[string]store.Instance // by id; the row's RowVersion is the one it was read at
}

func newRowCache(max int) *rowCache {
	return &rowCache{max: max, rows: make(map[string]store.Instance)}
}

// get returns a copy of the row id at version, if kept.
func (c *rowCache) get(id string, version int64) (store.Instance, bool) {
	c.mu.Lock()
	inst, ok := c.rows[id]
	c.mu.Unlock()
	if !ok || inst.RowVersion != version {
		return store.Instance{}, false
	}
	return cloneInstance(inst), true
}

// put keeps a copy of inst, unless a newer version of it is kept already
// (a slower show that read the row earlier).
func (c *rowCache) put(inst *store.Instance) {
	cp := cloneInstance(*inst)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.rows[inst.ID]; ok {
		if old.RowVersion > inst.RowVersion {
			return
		}
	} else if len(c.rows) >= c.max {
		// Full: drop any one row (map order is random); a dropped row
		// costs one full read at its next show.
		for k := range c.rows {
			delete(c.rows, k)
			break
		}
	}
	c.rows[inst.ID] = cp
}

// cloneInstance copies inst and what its pointers point to, so a caller
// that changes its copy never changes the kept row.
func cloneInstance(inst store.Instance) store.Instance {
	inst.Description = clonePtr(inst.Description)
	inst.KeyName = clonePtr(inst.KeyName)
	inst.FaultAt = clonePtr(inst.FaultAt)
	inst.ShelvedAt = clonePtr(inst.ShelvedAt)
	inst.LaunchedAt = clonePtr(inst.LaunchedAt)
	inst.TerminatedAt = clonePtr(inst.TerminatedAt)
	inst.DeletedAt = clonePtr(inst.DeletedAt)
	return inst
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// loadServerCached is loadServer for the show: the same visibility (a
// live server; an admin sees any project's, others their project's only;
// anything else is the same 404), read through s.rows. Only the show uses
// it: a handler that changes the row reads it whole (loadServer).
func (s *Service) loadServerCached(w http.ResponseWriter, r *http.Request) (*store.Instance, bool) {
	id := r.PathValue("id")
	creds := auth.FromContext(r.Context())
	db, err := s.st.DB.DB()
	if err != nil {
		s.log.Error("load server version", "id", id, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return nil, false
	}
	// database/sql rather than gorm: this runs at every GET of a polled
	// server, and gorm's statement building costs as much as the query.
	pg := s.st.Driver == "postgres"
	q, args := "SELECT row_version FROM instances WHERE id = ? AND deleted_at IS NULL LIMIT 1", []any{id}
	if pg {
		q = "SELECT row_version FROM instances WHERE id = $1 AND deleted_at IS NULL LIMIT 1"
	}
	if !creds.IsAdmin() {
		q = "SELECT row_version FROM instances WHERE id = ? AND deleted_at IS NULL AND project_id = ? LIMIT 1"
		if pg {
			q = "SELECT row_version FROM instances WHERE id = $1 AND deleted_at IS NULL AND project_id = $2 LIMIT 1"
		}
		args = append(args, creds.ProjectID)
	}
	var version int64
	if err := db.QueryRowContext(r.Context(), q, args...).Scan(&version); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			writeFault(w, errdefs.NotFoundf("Instance %s could not be found.", id))
			return nil, false
		}
		// Anything else (PostgreSQL refuses an id with a NUL byte or
		// invalid UTF-8, SQLSTATE 22021, which gorm's callbacks turn into
		// a 400; a lost connection): the whole-row read, whose errors are
		// answered as everywhere else.
		return s.loadServer(w, r)
	}
	if inst, ok := s.rows.get(id, version); ok {
		return &inst, true
	}
	// The row carries the version it was read with (the same SELECT), so
	// a kept row never looks newer than its data, whatever changed since
	// the query above.
	inst, ok := s.loadServer(w, r)
	if ok {
		s.rows.put(inst)
	}
	return inst, ok
}
