package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/capsule-cloud/capsule/store"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"
)

// The bootstrap helpers below are idempotent: `capsuled bootstrap` runs
// them on every start to make sure the admin project, user and roles
// exist. They always work in the default domain.

// EnsureRole returns the role named name (case-insensitive), creating it.
func EnsureRole(ctx context.Context, st *store.Store, name string) (store.Role, error) {
	var ro store.Role
	err := st.WithContext(ctx).Where("LOWER(name) = ? AND domain_id = ?", strings.ToLower(name), "").Take(&ro).Error
	if err == nil {
		return ro, nil
	}
	if !errors.Is(err, gorm.ErrRecordNotFound) {
		return ro, fmt.Errorf("look up role %s: %w", name, err)
	}
	ro = store.Role{ID: newID(), Name: name}
	if err := st.WithContext(ctx).Create(&ro).Error; err != nil {
		return ro, fmt.Errorf("create role %s: %w", name, err)
	}
	return ro, nil
}

// EnsureProject returns the default-domain project named name, creating
// it (enabled) with description.
func EnsureProject(ctx context.Context, st *store.Store, name, description string) (store.Project, error) {
	var p store.Project
	err := st.WithContext(ctx).Where("name = ? AND domain_id = ?", name, DefaultDomainID).Take(&p).Error
	if err == nil {
		return p, nil
	}
	if !errors.Is(err, gorm.ErrRecordNotFound) {
		return p, fmt.Errorf("look up project %s: %w", name, err)
	}
	p = store.Project{ID: newID(), Name: name, DomainID: DefaultDomainID, Description: description, Enabled: true}
	if err := st.WithContext(ctx).Create(&p).Error; err != nil {
		return p, fmt.Errorf("create project %s: %w", name, err)
	}
	return p, nil
}

// EnsureUser returns the default-domain user named name, creating it.
// defaultProject (a project name or id, "" for none) becomes its default
// project. An existing user whose password differs gets the new one, and
// its tokens are revoked. A new hash is made at rounds (the bcrypt cost,
// api.password_hash_rounds; 0: DefaultPasswordHashRounds).
func EnsureUser(ctx context.Context, st *store.Store, name, password, defaultProject string, rounds int) (store.User, error) {
	var projectID string
	if defaultProject != "" {
		p, err := findProject(ctx, st, defaultProject)
		if err != nil {
			return store.User{}, err
		}
		projectID = p.ID
	}
	db := st.WithContext(ctx)
	var u store.User
	err := db.Where("name = ? AND domain_id = ?", name, DefaultDomainID).Take(&u).Error
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		h, err := hashPassword(password, rounds)
		if err != nil {
			return u, err
		}
		u = store.User{ID: newID(), Name: name, DomainID: DefaultDomainID, PasswordHash: h,
			DefaultProjectID: projectID, Enabled: true}
		if err := db.Create(&u).Error; err != nil {
			return u, fmt.Errorf("create user %s: %w", name, err)
		}
		return u, nil
	case err != nil:
		return u, fmt.Errorf("look up user %s: %w", name, err)
	}
	changed := false
	if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
		h, err := hashPassword(password, rounds)
		if err != nil {
			return u, err
		}
		u.PasswordHash, changed = h, true
	}
	if projectID != "" && u.DefaultProjectID != projectID {
		u.DefaultProjectID, changed = projectID, true
	}
	if !u.Enabled {
		u.Enabled, changed = true, true
	}
	if !changed {
		return u, nil
	}
	err = db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Select("password_hash", "default_project_id", "enabled").Save(&u).Error; err != nil {
			return err
		}
		return revokeUserTokens(ctx, tx, u.ID)
	})
	if err != nil {
		return u, fmt.Errorf("update user %s: %w", name, err)
	}
	return u, nil
}

// Grant gives user the role on project (each a name or an id); granting
// twice is a no-op.
func Grant(ctx context.Context, st *store.Store, user, project, role string) error {
	u, err := findUser(ctx, st, user)
	if err != nil {
		return err
	}
	p, err := findProject(ctx, st, project)
	if err != nil {
		return err
	}
	ro, err := findRole(ctx, st, role)
	if err != nil {
		return err
	}
	return grant(ctx, st, u.ID, p.ID, ro.ID)
}

// findProject looks ref up as an id, then as a default-domain name.
func findProject(ctx context.Context, st *store.Store, ref string) (store.Project, error) {
	var p store.Project
	err := st.WithContext(ctx).Where("id = ?", ref).Or("name = ? AND domain_id = ?", ref, DefaultDomainID).
		Take(&p).Error
	return p, store.NotFound(err, "project "+ref)
}

func findUser(ctx context.Context, st *store.Store, ref string) (store.User, error) {
	var u store.User
	err := st.WithContext(ctx).Where("id = ?", ref).Or("name = ? AND domain_id = ?", ref, DefaultDomainID).
		Take(&u).Error
	return u, store.NotFound(err, "user "+ref)
}

func findRole(ctx context.Context, st *store.Store, ref string) (store.Role, error) {
	var ro store.Role
	err := st.WithContext(ctx).Where("id = ?", ref).Or("LOWER(name) = ? AND domain_id = ?", strings.ToLower(ref), "").Take(&ro).Error
	return ro, store.NotFound(err, "role "+ref)
}
