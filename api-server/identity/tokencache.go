package identity

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/store"
)

// TokenCacheTTL is how long a validated token's credentials are reused
// without reading the database again. Validating reads about ten rows
// (token, user, domains, project, role assignments direct, by group and
// inherited, implied roles); a client polling a server every 20 ms paid
// that on every request, which at ten boots in flight was a third of the
// API's CPU. Any write through this process's store empties the cache,
// so a revocation, a disabled user or project or a removed role made
// here takes effect on the next request; one made by another process on
// the same database (a second API process) within TokenCacheTTL
// (Keystone's auth_token middleware caches for 300 s by default).
// "Any write" means any write to a table validation reads (identityModels)
// or whose table gorm cannot name: at ten boots in flight the cloud writes
// servers, ports and actions many times a second, and emptying the cache
// on those made it miss almost every time.
const TokenCacheTTL = 2 * time.Second

// identityModels are the rows a validation reads (loadToken and the role
// resolution in inherit.go): a write to any of their tables empties the
// cache. TestCacheEmptiedByEveryTableValidationReads checks the list
// against the queries a validation makes.
func identityModels() []any {
	return []any{
		&store.Token{}, &store.User{}, &store.Domain{}, &store.Project{}, &store.ApplicationCredential{},
		&store.Role{}, &store.ImpliedRole{}, &store.RoleAssignment{}, &store.DomainRoleAssignment{},
		&store.SystemRoleAssignment{}, &store.InheritedRoleAssignment{}, &store.Group{}, &store.GroupMember{},
		&store.GroupRoleAssignment{},
	}
}

// tokenCache remembers credentials of live tokens by token hash. gen
// counts the writes to identity tables: an entry loaded while such a
// write ran is not kept.
type tokenCache struct {
	mu      sync.Mutex
	gen     uint64
	entries map[string]cachedToken
	// tables are identityModels' table names (nil: every write counts).
	tables map[string]bool
}

type cachedToken struct {
	creds *auth.Credentials
	until time.Time
}

// tokenCacheMax bounds the cache; past it, it starts again empty.
const tokenCacheMax = 4096

func newTokenCache(st *store.Store) *tokenCache {
	c := &tokenCache{entries: map[string]cachedToken{}}
	if st == nil || st.DB == nil {
		return c
	}
	c.tables = tableNames(st.DB, identityModels())
	name := fmt.Sprintf("capsule:identity-token-cache-%p", c)
	cb := st.DB.Callback()
	// Errors only for a duplicate name, which %p rules out.
	_ = cb.Create().After("gorm:create").Register(name, c.written)
	_ = cb.Update().After("gorm:update").Register(name, c.written)
	_ = cb.Delete().After("gorm:delete").Register(name, c.written)
	_ = cb.Raw().After("gorm:raw").Register(name, c.written)
	return c
}

// tableNames returns the tables of models as db names them; nil when one
// cannot be parsed (then every write empties the cache).
func tableNames(db *gorm.DB, models []any) map[string]bool {
	out := map[string]bool{}
	for _, m := range models {
		stmt := &gorm.Statement{DB: db}
		if err := stmt.Parse(m); err != nil || stmt.Schema == nil {
			return nil
		}
		out[stmt.Schema.Table] = true
	}
	return out
}

// written empties the cache after a write to an identity table, or to a
// table it cannot tell (raw SQL), also one of a transaction not committed
// yet: the entry a validation makes before the commit lives at most
// TokenCacheTTL.
func (c *tokenCache) written(db *gorm.DB) {
	if c.tables != nil && db.Statement != nil && db.Statement.Table != "" && !c.tables[db.Statement.Table] {
		return
	}
	c.mu.Lock()
	c.gen++
	clear(c.entries)
	c.mu.Unlock()
}

// get returns a copy of the credentials cached for hash, live at now.
func (c *tokenCache) get(hash string, now time.Time) (*auth.Credentials, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[hash]
	if !ok || !now.Before(e.until) || !now.Before(e.creds.ExpiresAt) {
		return nil, c.gen, false
	}
	cp := *e.creds
	cp.Roles = slices.Clone(e.creds.Roles)
	return &cp, c.gen, true
}

// put caches creds for hash unless the store was written since gen.
func (c *tokenCache) put(hash string, creds *auth.Credentials, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.entries) >= tokenCacheMax {
		clear(c.entries)
	}
	cp := *creds
	cp.Roles = slices.Clone(creds.Roles)
	c.entries[hash] = cachedToken{creds: &cp, until: now.Add(TokenCacheTTL)}
}
