package identity

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"gorm.io/gorm"
)

// Implied roles (role inference rules): /v3/roles/{prior}/implies/{implied}
// and /v3/role_inferences. Tokens and effective role assignments carry
// the implied roles of every role held; only administrators manage rules.

// prohibitedImplied is Keystone's [assignment] prohibited_implied_role
// default: no rule may make another role confer admin.
var prohibitedImplied = []string{"admin"}

func (s *Service) roleRef(r *http.Request, ro *store.Role) map[string]any {
	return map[string]any{"id": ro.ID, "name": ro.Name, "links": map[string]string{"self": s.selfURL(r, "roles", ro.ID)}}
}

// inferenceRoles loads the prior and (when named) implied role of r's
// URL, answering 403 or 404 itself.
func (s *Service) inferenceRoles(w http.ResponseWriter, r *http.Request, withImplied bool) (prior, implied store.Role, ok bool) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return prior, implied, false
	}
	var err error
	if prior, err = s.loadRole(r.Context(), r.PathValue("prior")); err != nil {
		s.storeError(w, r, err, "Could not find role: "+r.PathValue("prior")+".")
		return prior, implied, false
	}
	if withImplied {
		if implied, err = s.loadRole(r.Context(), r.PathValue("implied")); err != nil {
			s.storeError(w, r, err, "Could not find role: "+r.PathValue("implied")+".")
			return prior, implied, false
		}
	}
	return prior, implied, true
}

func (s *Service) inferenceResponse(w http.ResponseWriter, r *http.Request, status int, prior, implied *store.Role) {
	httpapi.WriteJSON(w, status, map[string]any{
		"role_inference": map[string]any{"prior_role": s.roleRef(r, prior), "implies": s.roleRef(r, implied)},
		"links":          map[string]string{"self": s.selfURL(r, "roles", prior.ID) + "/implies/" + implied.ID},
	})
}

func (s *Service) ruleExists(r *http.Request, prior, implied string) (bool, error) {
	var n int64
	err := s.st.WithContext(r.Context()).Model(&store.ImpliedRole{}).
		Where("prior_role_id = ? AND implied_role_id = ?", prior, implied).Count(&n).Error
	if err != nil {
		return false, fmt.Errorf("check role inference rule: %w", err)
	}
	return n > 0, nil
}

func (s *Service) putImpliedRole(w http.ResponseWriter, r *http.Request) {
	prior, implied, ok := s.inferenceRoles(w, r, true)
	if !ok {
		return
	}
	for _, p := range prohibitedImplied {
		if strings.EqualFold(implied.Name, p) && implied.DomainID == "" {
			s.failErr(w, r, errdefs.Forbidden(implied.Name+" is not an allowed implied role."))
			return
		}
	}
	if implied.DomainID != "" {
		// Keystone: a domain-specific role may imply others, never be implied.
		s.failErr(w, r, errdefs.Forbidden(implied.ID+" is a domain-specific role and cannot be implied."))
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		var rules []store.ImpliedRole
		if err := tx.Find(&rules).Error; err != nil {
			return fmt.Errorf("load role inference rules: %w", err)
		}
		// A rule that closes a loop would make every role of the loop
		// imply all the others: refuse it.
		reach := []string{implied.ID}
		for i := 0; i < len(reach) && i < 10000; i++ {
			if reach[i] == prior.ID {
				return errdefs.Forbidden("Role " + prior.ID + " implying " + implied.ID + " would create a cycle of implied roles.")
			}
			for _, ru := range rules {
				if ru.PriorRoleID == reach[i] {
					reach = append(reach, ru.ImpliedRoleID)
				}
			}
		}
		for _, ru := range rules {
			if ru.PriorRoleID == prior.ID && ru.ImpliedRoleID == implied.ID {
				return nil
			}
		}
		return tx.Create(&store.ImpliedRole{PriorRoleID: prior.ID, ImpliedRoleID: implied.ID}).Error
	})
	if err != nil && !errors.Is(err, gorm.ErrDuplicatedKey) {
		if errdefs.IsForbidden(err) {
			s.failErr(w, r, err)
			return
		}
		s.internalError(w, r, fmt.Errorf("create role inference rule: %w", err))
		return
	}
	s.inferenceResponse(w, r, http.StatusCreated, &prior, &implied)
}

// getImpliedRole is GET (and HEAD: 204 without a body, as Keystone's
// check) of one rule.
func (s *Service) getImpliedRole(w http.ResponseWriter, r *http.Request) {
	prior, implied, ok := s.inferenceRoles(w, r, true)
	if !ok {
		return
	}
	found, err := s.ruleExists(r, prior.ID, implied.ID)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if !found {
		s.failErr(w, r, errdefs.NotFound("Could not find implied role: "+implied.ID+"."))
		return
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.inferenceResponse(w, r, http.StatusOK, &prior, &implied)
}

func (s *Service) deleteImpliedRole(w http.ResponseWriter, r *http.Request) {
	prior, implied, ok := s.inferenceRoles(w, r, true)
	if !ok {
		return
	}
	res := s.st.WithContext(r.Context()).Where("prior_role_id = ? AND implied_role_id = ?", prior.ID, implied.ID).
		Delete(&store.ImpliedRole{})
	if res.Error != nil {
		s.internalError(w, r, fmt.Errorf("delete role inference rule: %w", res.Error))
		return
	}
	if res.RowsAffected == 0 {
		s.failErr(w, r, errdefs.NotFound("Could not find implied role: "+implied.ID+"."))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// inferences groups rules by prior role, in prior then implied name
// order, as {"prior_role": ..., "implies": [...]} objects.
func (s *Service) inferences(r *http.Request, priorID string) ([]map[string]any, error) {
	db := s.st.WithContext(r.Context())
	q := db.Model(&store.ImpliedRole{})
	if priorID != "" {
		q = q.Where("prior_role_id = ?", priorID)
	}
	var rules []store.ImpliedRole
	if err := q.Find(&rules).Error; err != nil {
		return nil, fmt.Errorf("list role inference rules: %w", err)
	}
	var roles []store.Role
	if err := db.Order("name").Find(&roles).Error; err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	implies := map[string][]string{}
	for _, ru := range rules {
		implies[ru.PriorRoleID] = append(implies[ru.PriorRoleID], ru.ImpliedRoleID)
	}
	out := []map[string]any{}
	for i := range roles {
		ids := implies[roles[i].ID]
		if len(ids) == 0 {
			continue
		}
		list := []map[string]any{}
		for j := range roles {
			if containsString(ids, roles[j].ID) {
				list = append(list, s.roleRef(r, &roles[j]))
			}
		}
		out = append(out, map[string]any{"prior_role": s.roleRef(r, &roles[i]), "implies": list})
	}
	return out, nil
}

func (s *Service) listImpliedRoles(w http.ResponseWriter, r *http.Request) {
	prior, _, ok := s.inferenceRoles(w, r, false)
	if !ok {
		return
	}
	infs, err := s.inferences(r, prior.ID)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	inf := map[string]any{"prior_role": s.roleRef(r, &prior), "implies": []map[string]any{}}
	if len(infs) > 0 {
		inf = infs[0]
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"role_inference": inf,
		"links": map[string]string{"self": s.selfURL(r, "roles", prior.ID) + "/implies"}})
}

func (s *Service) listRoleInferences(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	infs, err := s.inferences(r, "")
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"role_inferences": infs, "links": s.collectionLinks(r)})
}
