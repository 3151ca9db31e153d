package compute

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// keypairNameChars are the characters Nova accepts in a keypair name
// below microversion 2.92 (validators._validate_keypair_name_20).
const keypairNameChars = "_- 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// keypairInput is a validated create request.
type keypairInput struct {
	name, typ, userID string
	publicKey         *string // nil: generate one
}

func (s *Service) keypairRoutes(mux *http.ServeMux, p string) {
	mux.HandleFunc("POST "+p+"/os-keypairs", s.writer(s.createKeypair))
	mux.HandleFunc("GET "+p+"/os-keypairs", s.authed(s.listKeypairs))
	mux.HandleFunc("GET "+p+"/os-keypairs/{name}", s.authed(s.showKeypair))
	mux.HandleFunc("DELETE "+p+"/os-keypairs/{name}", s.writer(s.deleteKeypair))
}

// keypairOwner is the user whose keypairs a request acts on: the caller,
// or from 2.10 the user_id an admin names. A non-admin naming another user
// gets a 403 written here (ok=false).
func keypairOwner(w http.ResponseWriter, r *http.Request, action, requested string) (string, bool) {
	creds := auth.FromContext(r.Context())
	if requested == "" || requested == creds.UserID {
		return creds.UserID, true
	}
	if !creds.IsAdmin() {
		writeFault(w, errdefs.Forbiddenf("Policy doesn't allow os_compute_api:os-keypairs:%s to be performed.", action))
		return "", false
	}
	return requested, true
}

// queryUserID is the user_id query parameter, honoured from 2.10.
func queryUserID(r *http.Request) string {
	if !versionOf(r.Context()).AtLeast(10) {
		return ""
	}
	return r.URL.Query().Get("user_id")
}

// keypairView is the keypair as list, create and show render it; Nova adds
// "type" from 2.2.
func keypairView(kp *store.Keypair, v apiVersion) map[string]any {
	out := map[string]any{"name": kp.Name, "public_key": kp.PublicKey, "fingerprint": kp.Fingerprint}
	if v.AtLeast(2) {
		out["type"] = kp.Type
	}
	return out
}

func keypairShowView(kp *store.Keypair, v apiVersion) map[string]any {
	out := keypairView(kp, v)
	out["user_id"] = kp.UserID
	out["id"] = kp.ID
	out["deleted"] = false
	out["deleted_at"] = nil
	out["created_at"] = kp.CreatedAt.UTC().Format(actionFmt)
	out["updated_at"] = nil
	if kp.UpdatedAt != nil {
		out["updated_at"] = kp.UpdatedAt.UTC().Format(actionFmt)
	}
	return out
}

// parseKeypairInput checks a create body as Nova's create, create_v22 and
// create_v210 schemas do (no unknown keys, type from 2.2, user_id from
// 2.10) and the name as Nova's keypair_name_20 format.
func parseKeypairInput(body map[string]json.RawMessage, v apiVersion) (keypairInput, error) {
	raw, ok := body["keypair"]
	if !ok {
		return keypairInput{}, errdefs.InvalidArgument("Invalid input for field/attribute keypair. Value: 'keypair' is a required property")
	}
	for k := range body {
		if k != "keypair" {
			return keypairInput{}, errdefs.InvalidArgumentf("Invalid input for field/attribute body. Additional properties are not allowed ('%s' was unexpected)", k)
		}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return keypairInput{}, errdefs.InvalidArgument("Invalid input for field/attribute keypair. Value must be an object.")
	}
	in := keypairInput{typ: keypairSSH}
	for k, val := range fields {
		if err := in.set(k, val, v); err != nil {
			return keypairInput{}, err
		}
	}
	if _, ok := fields["name"]; !ok {
		return keypairInput{}, errdefs.InvalidArgument("Invalid input for field/attribute keypair. Value: 'name' is a required property")
	}
	if v.AtLeast(92) {
		// 2.92: import only (the cloud generates no private keys);
		// names may also hold '@' and '.'.
		if in.publicKey == nil {
			return keypairInput{}, errdefs.InvalidArgument("Invalid input for field/attribute keypair. Value: 'public_key' is a required property")
		}
		return in, validKeypairNameChars(in.name, keypairNameChars+"@.")
	}
	return in, validKeypairName(in.name)
}

// set records one field of the create body.
func (in *keypairInput) set(key string, val json.RawMessage, v apiVersion) error {
	allowed := key == "name" || key == "public_key" || (key == "type" && v.AtLeast(2)) || (key == "user_id" && v.AtLeast(10))
	if !allowed {
		return errdefs.InvalidArgumentf("Invalid input for field/attribute keypair. Additional properties are not allowed ('%s' was unexpected)", key)
	}
	var str string
	if err := json.Unmarshal(val, &str); err != nil {
		return errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %s. It is not of type 'string'", key, val)
	}
	switch key {
	case "name":
		in.name = str
	case "public_key":
		in.publicKey = &str
	case "type":
		if str != keypairSSH && str != keypairX509 {
			return errdefs.InvalidArgumentf("Invalid input for field/attribute type. Value: %s. '%s' is not one of ['ssh', 'x509']", str, str)
		}
		in.typ = str
	case "user_id":
		in.userID = str
	}
	return nil
}

func validKeypairName(name string) error { return validKeypairNameChars(name, keypairNameChars) }

func validKeypairNameChars(name, chars string) error {
	n := utf8.RuneCountInString(name)
	if n < 1 || n > 255 {
		return errdefs.InvalidArgumentf("Invalid input for field/attribute name. Value: %s. Keypair name must be between 1 and 255 characters long", name)
	}
	if strings.IndexFunc(name, func(r rune) bool { return !strings.ContainsRune(chars, r) }) >= 0 {
		if chars != keypairNameChars {
			return errdefs.InvalidArgumentf("Invalid input for field/attribute name. Value: %s. Keypair name may contain only letters, digits, spaces, '_', '-', '@' and '.'", name)
		}
		return errdefs.InvalidArgumentf("Invalid input for field/attribute name. Value: %s. Keypair name may contain only letters, digits, spaces, '_' and '-'", name)
	}
	return nil
}

// buildKeypair imports in's public key, or generates a key pair (the
// private key is returned only then).
func (s *Service) buildKeypair(in keypairInput, owner string) (*store.Keypair, string, error) {
	kp := &store.Keypair{UserID: owner, Name: in.name, Type: in.typ}
	if in.publicKey != nil {
		fp, err := fingerprintOf(in.typ, *in.publicKey)
		if err != nil {
			return nil, "", err
		}
		kp.PublicKey, kp.Fingerprint = *in.publicKey, fp
		return kp, "", nil
	}
	gen, err := generateKey(in.typ, owner, s.opts.Now())
	if err != nil {
		return nil, "", err
	}
	kp.PublicKey, kp.Fingerprint = gen.publicKey, gen.fingerprint
	return kp, gen.privateKey, nil
}

func (s *Service) createKeypair(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	v := versionOf(ctx)
	var body map[string]json.RawMessage
	if !decodeBody(w, r, &body) {
		return
	}
	in, err := parseKeypairInput(body, v)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	owner, ok := keypairOwner(w, r, "create", in.userID)
	if !ok {
		return
	}
	kp, private, err := s.buildKeypair(in, owner)
	if err != nil {
		if in.publicKey == nil {
			s.log.Error("generate keypair", "user", owner, "error", err)
			writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not generate the key pair.")
			return
		}
		writeFault(w, errdefs.InvalidArgument("Keypair data is invalid: "+err.Error()))
		return
	}
	if !s.storeKeypair(w, r, kp) {
		return
	}
	out := keypairView(kp, v)
	out["user_id"] = kp.UserID
	if private != "" {
		out["private_key"] = private
	}
	status := http.StatusOK
	if v.AtLeast(2) {
		status = http.StatusCreated
	}
	writeJSON(w, status, map[string]any{"keypair": out})
}

// storeKeypair inserts kp within the user's quota, writing the error
// response itself (ok=false).
func (s *Service) storeKeypair(w http.ResponseWriter, r *http.Request, kp *store.Keypair) bool {
	// The key_pairs quota of the caller's project (or of the owner
	// there, when an admin set one for that user); -1 is unlimited.
	limit, err := s.keypairLimit(r.Context(), auth.FromContext(r.Context()).ProjectID, kp.UserID)
	if err == nil {
		err = s.st.CreateKeypair(r.Context(), kp, limit)
	}
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrKeypairQuota):
		writeFault(w, errdefs.QuotaExceeded("Quota exceeded, too many key pairs."))
	case errors.Is(err, store.ErrConflict):
		writeFault(w, errdefs.Conflictf("Key pair '%s' already exists.", kp.Name))
	default:
		s.log.Error("store keypair", "user", kp.UserID, "name", kp.Name, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not record the key pair.")
	}
	return false
}

func (s *Service) listKeypairs(w http.ResponseWriter, r *http.Request) {
	v := versionOf(r.Context())
	owner, ok := keypairOwner(w, r, "index", queryUserID(r))
	if !ok {
		return
	}
	kps, err := s.st.ListKeypairs(r.Context(), owner)
	if err != nil {
		s.log.Error("list keypairs", "user", owner, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not list key pairs.")
		return
	}
	limit, more := -1, false
	if v.AtLeast(35) {
		// Paging (limit, marker = a keypair name) exists from 2.35;
		// before it Nova ignores both.
		if kps, limit, more, ok = pageOf(w, r, kps, func(k *store.Keypair) string { return k.Name }); !ok {
			return
		}
	}
	items := make([]map[string]any, 0, len(kps))
	for i := range kps {
		items = append(items, map[string]any{"keypair": keypairView(&kps[i], v)})
	}
	out := map[string]any{"keypairs": items}
	if more && len(kps) > 0 {
		out["keypairs_links"] = s.nextLinks(r, "os-keypairs", false, limit, kps[len(kps)-1].Name)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Service) showKeypair(w http.ResponseWriter, r *http.Request) {
	kp, ok := s.loadKeypair(w, r, "show")
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"keypair": keypairShowView(kp, versionOf(r.Context()))})
}

func (s *Service) deleteKeypair(w http.ResponseWriter, r *http.Request) {
	owner, ok := keypairOwner(w, r, "delete", queryUserID(r))
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := s.st.DeleteKeypair(r.Context(), owner, name); err != nil {
		s.keypairError(w, owner, name, err)
		return
	}
	status := http.StatusAccepted
	if versionOf(r.Context()).AtLeast(2) {
		status = http.StatusNoContent
	}
	noContent(w, status)
}

// loadKeypair finds the keypair the path names for the request's owner,
// writing a 403/404 itself (ok=false).
func (s *Service) loadKeypair(w http.ResponseWriter, r *http.Request, action string) (*store.Keypair, bool) {
	owner, ok := keypairOwner(w, r, action, queryUserID(r))
	if !ok {
		return nil, false
	}
	name := r.PathValue("name")
	kp, err := s.st.GetKeypair(r.Context(), owner, name)
	if err != nil {
		s.keypairError(w, owner, name, err)
		return nil, false
	}
	return kp, true
}

func (s *Service) keypairError(w http.ResponseWriter, owner, name string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		writeFault(w, errdefs.NotFoundf("Keypair %s not found for user %s", name, owner))
		return
	}
	s.log.Error("keypair", "user", owner, "name", name, "error", err)
	writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not read the key pair.")
}

// serverKeypair resolves a server create's key_name: the caller's own
// keypair (as Nova, keypairs belong to the user who boots). A nil name is
// no key; an unknown or empty one is a 400 written here (ok=false).
func (s *Service) serverKeypair(w http.ResponseWriter, r *http.Request, name *string) (*store.Keypair, bool) {
	if name == nil {
		return nil, true
	}
	creds := auth.FromContext(r.Context())
	kp, err := s.st.GetKeypair(r.Context(), creds.UserID, *name)
	switch {
	case err == nil:
		return kp, true
	case errors.Is(err, store.ErrNotFound):
		writeFault(w, errdefs.InvalidArgument("Invalid key_name provided."))
	default:
		s.log.Error("keypair of a server create", "user", creds.UserID, "name", *name, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not read the key pair.")
	}
	return nil, false
}
