package identity

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"gorm.io/gorm"
)

// Keystone credentials (/v3/credentials): blobs a user keeps with the
// identity service, of a type; an "ec2" one holds an access key and a
// secret (its id is the SHA-256 of the access key, as Keystone makes it)
// and backs OS-EC2 and /v3/s3tokens. Policy is Keystone's default: a
// cloud admin, or the credential's user; a credential of someone else is
// not found (404). Capsule adds that writing needs a writer's token
// (member or admin; a reader gets 403) and no application credential
// token: a credential made with one would outlive its limits.

// CredentialKeySize is the length of the credential encryption key
// (AES-256).
const CredentialKeySize = 32

// CredentialKey encrypts credential blobs at rest.
type CredentialKey credentialSealer

// LoadCredentialKey reads a credential key file: the standard base64 of
// CredentialKeySize random bytes (e.g. `head -c32 /dev/urandom | base64`).
func LoadCredentialKey(path string) (*CredentialKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read credential key: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != CredentialKeySize {
		return nil, fmt.Errorf("credential key %s: want the base64 of %d bytes", path, CredentialKeySize)
	}
	return NewCredentialKey(key)
}

// credentialSealer encrypts credential blobs at rest with AES-256-GCM, the
// credential's id as additional data (a blob moved to another row does not
// open). A nil sealer keeps blobs as given.
type credentialSealer struct {
	aead cipher.AEAD
	hash string // names the key in each row it sealed
}

// NewCredentialKey makes a credential key of CredentialKeySize bytes.
func NewCredentialKey(key []byte) (*CredentialKey, error) {
	if len(key) != CredentialKeySize {
		return nil, fmt.Errorf("credential key: %d bytes, want %d", len(key), CredentialKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("credential key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("credential key: %w", err)
	}
	sum := sha256.Sum256(append([]byte("capsule credential key\x00"), key...))
	return &CredentialKey{aead: aead, hash: hex.EncodeToString(sum[:16])}, nil
}

// seal sets cr's stored blob from blob.
func (cs *credentialSealer) seal(cr *store.Credential, blob string) error {
	if cs == nil {
		cr.Blob, cr.KeyHash = []byte(blob), ""
		return nil
	}
	nonce := make([]byte, cs.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("seal credential %s: %w", cr.ID, err)
	}
	cr.Blob, cr.KeyHash = cs.aead.Seal(nonce, nonce, []byte(blob), []byte(cr.ID)), cs.hash
	return nil
}

// open returns cr's blob.
func (cs *credentialSealer) open(cr *store.Credential) (string, error) {
	if cr.KeyHash == "" {
		return string(cr.Blob), nil
	}
	if cs == nil || cr.KeyHash != cs.hash {
		return "", fmt.Errorf("credential %s was encrypted with another credential key (%s)", cr.ID, cr.KeyHash)
	}
	n := cs.aead.NonceSize()
	if len(cr.Blob) < n {
		return "", fmt.Errorf("credential %s: sealed blob too short", cr.ID)
	}
	b, err := cs.aead.Open(nil, cr.Blob[:n], cr.Blob[n:], []byte(cr.ID))
	if err != nil {
		return "", fmt.Errorf("open credential %s: %w", cr.ID, err)
	}
	return string(b), nil
}

// ec2Blob is what an ec2 credential's blob must hold.
type ec2Blob struct {
	Access string `json:"access"`
	Secret string `json:"secret"`
}

func parseEC2Blob(blob string) (ec2Blob, error) {
	var b ec2Blob
	if err := json.Unmarshal([]byte(blob), &b); err != nil {
		return b, errdefs.InvalidArgument("Invalid blob in credential: an ec2 blob is a JSON object.")
	}
	if b.Access == "" || b.Secret == "" {
		return b, errdefs.InvalidArgument("Invalid blob in credential: an ec2 blob needs an access and a secret.")
	}
	return b, nil
}

// ec2CredentialID is an ec2 credential's id: the SHA-256 of its access key.
func ec2CredentialID(access string) string {
	sum := sha256.Sum256([]byte(access))
	return hex.EncodeToString(sum[:])
}

func (s *Service) credentialView(r *http.Request, cr *store.Credential, blob string) map[string]any {
	var project any
	if cr.ProjectID != "" {
		project = cr.ProjectID
	}
	return map[string]any{"id": cr.ID, "user_id": cr.UserID, "project_id": project, "type": cr.Type, "blob": blob,
		"links": map[string]string{"self": s.selfURL(r, "credentials", cr.ID)}}
}

type credentialInput struct {
	UserID    *string `json:"user_id"`
	ProjectID *string `json:"project_id"`
	Type      *string `json:"type"`
	Blob      *string `json:"blob"`
}

// credentialWriter checks the caller may write credentials at all.
func (s *Service) credentialWriter(w http.ResponseWriter, r *http.Request) (*auth.Credentials, bool) {
	c := auth.FromContext(r.Context())
	switch {
	case c.AppCredID != "":
		s.failErr(w, r, errdefs.Forbidden("A token from an application credential cannot manage credentials."))
		return c, false
	case !cloudAdmin(c) && !c.CanWrite():
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return c, false
	}
	return c, true
}

// checkCredential validates cr (already holding the wanted user, project
// and type) with blob: the user and project exist, and an ec2 one names
// its project and carries an access and a secret.
func (s *Service) checkCredential(ctx context.Context, cr *store.Credential, blob string) error {
	if cr.Type == "" || len(cr.Type) > maxName {
		return errdefs.InvalidArgument("Invalid input for field 'type': a non-empty type of at most 255 characters is required.")
	}
	if _, err := s.loadUser(ctx, cr.UserID); err != nil {
		return notFoundAs(err, "Could not find user: "+cr.UserID+".")
	}
	if cr.ProjectID != "" {
		if _, err := s.loadProject(ctx, cr.ProjectID); err != nil {
			return notFoundAs(err, "Could not find project: "+cr.ProjectID+".")
		}
	}
	if cr.Type == "ec2" {
		if cr.ProjectID == "" {
			return errdefs.InvalidArgument("Invalid input for field 'project_id': an ec2 credential needs a project.")
		}
		if _, err := parseEC2Blob(blob); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) createCredential(w http.ResponseWriter, r *http.Request) {
	c, ok := s.credentialWriter(w, r)
	if !ok {
		return
	}
	var in credentialInput
	if !s.readEntity(w, r, "credential", &in) {
		return
	}
	switch {
	case in.UserID == nil || *in.UserID == "":
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for field 'user_id': it is required."))
		return
	case in.Type == nil:
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for field 'type': it is required."))
		return
	case in.Blob == nil:
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for field 'blob': it is required."))
		return
	}
	if *in.UserID != c.UserID && !cloudAdmin(c) {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return
	}
	cr := store.Credential{ID: newID(), UserID: *in.UserID, Type: *in.Type, CreatedAt: s.now()}
	if in.ProjectID != nil {
		cr.ProjectID = *in.ProjectID
	}
	if err := s.checkCredential(r.Context(), &cr, *in.Blob); err != nil {
		s.failErr(w, r, err)
		return
	}
	if cr.Type == "ec2" {
		b, _ := parseEC2Blob(*in.Blob)
		cr.ID = ec2CredentialID(b.Access)
	}
	s.storeCredential(w, r, &cr, *in.Blob, http.StatusCreated)
}

// storeCredential seals blob into cr, creates it and answers it.
func (s *Service) storeCredential(w http.ResponseWriter, r *http.Request, cr *store.Credential, blob string, status int) {
	if err := s.sealer.seal(cr, blob); err != nil {
		s.internalError(w, r, err)
		return
	}
	if err := s.st.WithContext(r.Context()).Create(cr).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			s.failErr(w, r, errdefs.Conflict("Conflict occurred attempting to store credential - Duplicate ID, "+cr.ID+"."))
			return
		}
		s.internalError(w, r, fmt.Errorf("create credential: %w", err))
		return
	}
	httpapi.WriteJSON(w, status, map[string]any{"credential": s.credentialView(r, cr, blob)})
}

func (s *Service) listCredentials(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	db := s.st.WithContext(r.Context())
	q := r.URL.Query()
	if !cloudAdmin(c) {
		db = db.Where("user_id = ?", c.UserID)
	}
	if q.Has("user_id") {
		db = db.Where("user_id = ?", q.Get("user_id"))
	}
	if q.Has("type") {
		db = db.Where("type = ?", q.Get("type"))
	}
	var crs []store.Credential
	if err := db.Order("created_at, id").Find(&crs).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list credentials: %w", err))
		return
	}
	out := []map[string]any{}
	for i := range crs {
		blob, err := s.sealer.open(&crs[i])
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		out = append(out, s.credentialView(r, &crs[i], blob))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"credentials": out, "links": s.collectionLinks(r)})
}

// loadCredential loads credential id for c: a cloud admin's, or its own
// user's; anyone else is told it does not exist.
func (s *Service) loadCredential(ctx context.Context, c *auth.Credentials, id string) (store.Credential, string, error) {
	var cr store.Credential
	err := s.st.WithContext(ctx).Where("id = ?", id).Take(&cr).Error
	if err == nil && cr.UserID != c.UserID && !cloudAdmin(c) {
		err = gorm.ErrRecordNotFound
	}
	if err != nil {
		return cr, "", notFoundAs(store.NotFound(err, "credential "+id), "Could not find credential: "+id+".")
	}
	blob, err := s.sealer.open(&cr)
	return cr, blob, err
}

func (s *Service) getCredential(w http.ResponseWriter, r *http.Request) {
	cr, blob, err := s.loadCredential(r.Context(), auth.FromContext(r.Context()), r.PathValue("id"))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"credential": s.credentialView(r, &cr, blob)})
}

func (s *Service) updateCredential(w http.ResponseWriter, r *http.Request) {
	c, ok := s.credentialWriter(w, r)
	if !ok {
		return
	}
	cr, blob, err := s.loadCredential(r.Context(), c, r.PathValue("id"))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	var in credentialInput
	if !s.readEntity(w, r, "credential", &in) {
		return
	}
	if in.UserID != nil {
		if *in.UserID != c.UserID && !cloudAdmin(c) {
			s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
			return
		}
		cr.UserID = *in.UserID
	}
	if in.ProjectID != nil {
		cr.ProjectID = *in.ProjectID
	}
	if in.Type != nil {
		cr.Type = *in.Type
	}
	if in.Blob != nil {
		blob = *in.Blob
	}
	if err := s.checkCredential(r.Context(), &cr, blob); err != nil {
		s.failErr(w, r, err)
		return
	}
	if cr.Type == "ec2" {
		// The id is the access key's hash: the access key cannot change.
		if b, _ := parseEC2Blob(blob); ec2CredentialID(b.Access) != cr.ID {
			s.failErr(w, r, errdefs.InvalidArgument("Invalid blob in credential: an ec2 credential's access key cannot change (its id is the key's hash)."))
			return
		}
	}
	if err := s.sealer.seal(&cr, blob); err != nil {
		s.internalError(w, r, err)
		return
	}
	res := s.st.WithContext(r.Context()).Model(&store.Credential{}).Where("id = ?", cr.ID).
		Updates(map[string]any{"user_id": cr.UserID, "project_id": cr.ProjectID, "type": cr.Type, "blob": cr.Blob, "key_hash": cr.KeyHash})
	if res.Error != nil {
		s.internalError(w, r, fmt.Errorf("update credential %s: %w", cr.ID, res.Error))
		return
	}
	if res.RowsAffected == 0 {
		s.failErr(w, r, errdefs.NotFound("Could not find credential: "+cr.ID+"."))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"credential": s.credentialView(r, &cr, blob)})
}

func (s *Service) deleteCredential(w http.ResponseWriter, r *http.Request) {
	c, ok := s.credentialWriter(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	db := s.st.WithContext(r.Context()).Where("id = ?", id)
	if !cloudAdmin(c) {
		db = db.Where("user_id = ?", c.UserID)
	}
	res := db.Delete(&store.Credential{})
	if res.Error != nil {
		s.internalError(w, r, fmt.Errorf("delete credential %s: %w", id, res.Error))
		return
	}
	if res.RowsAffected == 0 {
		s.failErr(w, r, errdefs.NotFound("Could not find credential: "+id+"."))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// OS-EC2 (/v3/users/{id}/credentials/OS-EC2[/{access}]): the ec2
// credentials of a user, made with a generated access key and secret for
// a project; the same rows as /v3/credentials of type ec2.

func (s *Service) ec2View(r *http.Request, cr *store.Credential, b ec2Blob) map[string]any {
	return map[string]any{"user_id": cr.UserID, "tenant_id": cr.ProjectID, "access": b.Access, "secret": b.Secret,
		"trust_id": nil, "links": map[string]string{"self": httpapi.BaseURL(r) + "/v3/users/" + cr.UserID +
			"/credentials/OS-EC2/" + b.Access}}
}

// ec2Owner checks the caller may act on user {id}'s ec2 credentials: the
// user, or a cloud admin; someone else's are not found (404).
func (s *Service) ec2Owner(w http.ResponseWriter, r *http.Request) (*auth.Credentials, bool) {
	c := auth.FromContext(r.Context())
	id := r.PathValue("id")
	if c.UserID != id && !cloudAdmin(c) {
		s.failErr(w, r, errdefs.NotFound("Could not find user: "+id+"."))
		return c, false
	}
	if _, err := s.loadUser(r.Context(), id); err != nil {
		s.failErr(w, r, notFoundAs(err, "Could not find user: "+id+"."))
		return c, false
	}
	return c, true
}

func (s *Service) createEC2(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.credentialWriter(w, r); !ok {
		return
	}
	if _, ok := s.ec2Owner(w, r); !ok {
		return
	}
	var in struct {
		TenantID string `json:"tenant_id"`
	}
	if err := httpapi.ReadJSON(r, &in); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: "+err.Error()))
		return
	}
	if in.TenantID == "" {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for field 'tenant_id': it is required."))
		return
	}
	access, err := randomHex(16)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	secret, err := randomHex(16)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	blob, _ := json.Marshal(map[string]any{"access": access, "secret": secret, "trust_id": nil, "app_cred_id": nil, "access_token_id": nil})
	cr := store.Credential{ID: ec2CredentialID(access), UserID: r.PathValue("id"), ProjectID: in.TenantID, Type: "ec2", CreatedAt: s.now()}
	if err := s.checkCredential(r.Context(), &cr, string(blob)); err != nil {
		s.failErr(w, r, err)
		return
	}
	if err := s.sealer.seal(&cr, string(blob)); err != nil {
		s.internalError(w, r, err)
		return
	}
	if err := s.st.WithContext(r.Context()).Create(&cr).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("create ec2 credential: %w", err))
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"credential": s.ec2View(r, &cr, ec2Blob{Access: access, Secret: secret})})
}

func (s *Service) listEC2(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.ec2Owner(w, r); !ok {
		return
	}
	var crs []store.Credential
	if err := s.st.WithContext(r.Context()).Where("user_id = ? AND type = ?", r.PathValue("id"), "ec2").
		Order("created_at, id").Find(&crs).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list ec2 credentials: %w", err))
		return
	}
	out := []map[string]any{}
	for i := range crs {
		blob, err := s.sealer.open(&crs[i])
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		b, err := parseEC2Blob(blob)
		if err != nil {
			continue // not an ec2 blob (stored before the check): not listable here
		}
		out = append(out, s.ec2View(r, &crs[i], b))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"credentials": out, "links": s.collectionLinks(r)})
}

// loadEC2 loads user {id}'s ec2 credential of access key {access}.
func (s *Service) loadEC2(ctx context.Context, userID, access string) (store.Credential, ec2Blob, error) {
	var cr store.Credential
	var b ec2Blob
	notFound := errdefs.NotFound("Could not find credential: " + ec2CredentialID(access) + ".")
	err := s.st.WithContext(ctx).Where("id = ? AND user_id = ? AND type = ?", ec2CredentialID(access), userID, "ec2").Take(&cr).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return cr, b, notFound
	}
	if err != nil {
		return cr, b, fmt.Errorf("load ec2 credential: %w", err)
	}
	blob, err := s.sealer.open(&cr)
	if err != nil {
		return cr, b, err
	}
	if b, err = parseEC2Blob(blob); err != nil || b.Access != access {
		return cr, b, notFound
	}
	return cr, b, nil
}

func (s *Service) getEC2(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.ec2Owner(w, r); !ok {
		return
	}
	cr, b, err := s.loadEC2(r.Context(), r.PathValue("id"), r.PathValue("access"))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"credential": s.ec2View(r, &cr, b)})
}

func (s *Service) deleteEC2(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.credentialWriter(w, r); !ok {
		return
	}
	if _, ok := s.ec2Owner(w, r); !ok {
		return
	}
	cr, _, err := s.loadEC2(r.Context(), r.PathValue("id"), r.PathValue("access"))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if err := s.st.WithContext(r.Context()).Where("id = ?", cr.ID).Delete(&store.Credential{}).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("delete ec2 credential %s: %w", cr.ID, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// randomHex returns n random bytes in hex (Keystone's uuid4().hex keys).
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random key: %w", err)
	}
	return hex.EncodeToString(b), nil
}
