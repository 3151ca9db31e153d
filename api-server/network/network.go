// Package network serves the Network API (Neutron v2.0). This first slice
// answers version discovery and lists (empty) collections so clients that
// probe the network endpoint (gophercloud, openstacksdk) work; networks,
// subnets and ports with static IPs on OVS VLANs come with the networking
// issue.
package network

import (
	"encoding/json"
	"net/http"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
)

// Service is the network API.
type Service struct {
	validator auth.Validator
}

// New returns the network API.
func New(v auth.Validator) *Service { return &Service{validator: v} }

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"NeutronError": map[string]string{"type": typ, "message": msg, "detail": ""}})
}

// Handler returns the network port's handler.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"versions": []any{map[string]any{
			"id": "v2.0", "status": "CURRENT",
			"links": []map[string]string{{"rel": "self", "href": httpapi.BaseURL(r) + "/v2.0/"}}}}})
	})
	authed := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, err := s.validator.Validate(r.Context(), r.Header.Get("X-Auth-Token"))
			if err != nil || c == nil {
				writeError(w, http.StatusUnauthorized, "Unauthorized", "The request you have made requires authentication.")
				return
			}
			h(w, r.WithContext(auth.WithCredentials(r.Context(), c)))
		}
	}
	mux.HandleFunc("GET /v2.0", authed(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"resources": []any{}})
	}))
	for _, coll := range []string{"networks", "subnets", "ports", "security-groups", "floatingips", "routers", "extensions"} {
		coll := coll
		mux.HandleFunc("GET /v2.0/"+coll, authed(func(w http.ResponseWriter, r *http.Request) {
			key := coll
			if coll == "security-groups" {
				key = "security_groups"
			}
			httpapi.WriteJSON(w, http.StatusOK, map[string]any{key: []any{}})
		}))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "HTTPNotFound", "The resource could not be found.")
	})
	return httpapi.TrimSlash(mux)
}
