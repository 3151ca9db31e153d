package identity

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"gorm.io/gorm"
)

// POST /v3/s3tokens: an S3 gateway (swift3's s3token middleware) hands
// Keystone a request's string to sign (base64, "token"), its signature
// and access key; the signature is checked with the secret of the ec2
// credential of that access key, and a token for the credential's user,
// scoped to its project, is the answer (200, X-Subject-Token), as
// Keystone's s3tokens. Like Keystone it needs no token of its own; wrong
// guesses count toward the source address's login lockout.

type s3Request struct {
	Credentials *struct {
		Access    string `json:"access"`
		Signature string `json:"signature"`
		Token     string `json:"token"`
	} `json:"credentials"`
}

func (s *Service) s3Tokens(w http.ResponseWriter, r *http.Request) {
	var in s3Request
	if err := httpapi.ReadJSON(r, &in); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: "+err.Error()))
		return
	}
	if in.Credentials == nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: 'credentials' is a required property."))
		return
	}
	row, err := s.s3Authenticate(r.Context(), in.Credentials.Access, in.Credentials.Signature, in.Credentials.Token, sourceAddress(r))
	if err != nil {
		if errdefs.KindOf(err) == errdefs.ErrUnauthenticated {
			s.log.InfoContext(r.Context(), "s3 token refused", "reason", errdefs.Message(err), "request_id", httpapi.RequestID(r.Context()))
			s.failErr(w, r, errdefs.Unauthenticated(authFailMsg))
			return
		}
		s.failErr(w, r, err)
		return
	}
	s.writeNewToken(w, r, row, http.StatusOK)
}

// s3Authenticate checks an S3 signature against the stored secret of the
// access key's ec2 credential and returns the token row to issue.
func (s *Service) s3Authenticate(ctx context.Context, access, signature, token, source string) (*store.Token, error) {
	if access == "" || signature == "" || token == "" {
		return nil, unauthorized("s3 credentials need an access, a signature and a token")
	}
	if s.login.sources.locked(source, s.now()) {
		return nil, unauthorized("too many failed logins from " + source)
	}
	fail := func(why string) (*store.Token, error) {
		s.login.sources.fail(source, s.now())
		return nil, unauthorized(why)
	}
	var cr store.Credential
	err := s.st.WithContext(ctx).Where("id = ? AND type = ?", ec2CredentialID(access), "ec2").Take(&cr).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return fail("unknown access key")
	}
	if err != nil {
		return nil, fmt.Errorf("load ec2 credential: %w", err)
	}
	blob, err := s.sealer.open(&cr)
	if err != nil {
		return nil, err
	}
	b, err := parseEC2Blob(blob)
	if err != nil || b.Access != access {
		return fail("credential " + cr.ID + " is not an ec2 credential of that access key")
	}
	// Keystone decodes the token as URL-safe base64, which also takes the
	// standard alphabet.
	sts, err := base64.StdEncoding.DecodeString(strings.NewReplacer("-", "+", "_", "/").Replace(token))
	if err != nil {
		return fail("s3 token is not base64")
	}
	want, err := s3Signature(sts, b.Secret)
	if err != nil {
		return fail(err.Error())
	}
	if subtle.ConstantTimeCompare([]byte(signature), []byte(want)) != 1 {
		return fail("wrong s3 signature for credential " + cr.ID)
	}
	var user store.User
	if err := s.st.WithContext(ctx).Where("id = ?", cr.UserID).Take(&user).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, unauthorized("user of credential " + cr.ID + " gone")
		}
		return nil, fmt.Errorf("load user: %w", err)
	}
	if !user.Enabled {
		return nil, unauthorized("user " + user.ID + " is disabled")
	}
	if _, err := s.liveDomain(ctx, user.DomainID); err != nil {
		if errors.Is(err, ErrInvalidToken) {
			return nil, unauthorized("domain of user " + user.ID + ": " + err.Error())
		}
		return nil, err
	}
	// The credential's project, checked as a login's project scope is
	// (enabled, in a live domain, the user holds a role there).
	pid, _ := json.Marshal(cr.ProjectID)
	projectID, _, _, err := s.resolveScope(ctx, []byte(`{"project":{"id":`+string(pid)+`}}`), &user)
	if err != nil {
		return nil, err
	}
	audit, err := randomString(16)
	if err != nil {
		return nil, err
	}
	now := s.now()
	return &store.Token{UserID: user.ID, ProjectID: projectID, Methods: "ec2credential", AuditID: audit,
		IssuedAt: now, ExpiresAt: now.Add(s.opts.TokenTTL)}, nil
}

// s3Signature is Keystone's signature of an S3 string to sign: AWS
// signature version 4 (hex HMAC-SHA256 with the key derived from the
// secret and the string's scope) when the string starts "AWS4", else
// version 2 (base64 HMAC-SHA1 with the secret).
func s3Signature(sts []byte, secret string) (string, error) {
	if !strings.HasPrefix(string(sts), "AWS4") {
		m := hmac.New(sha1.New, []byte(secret))
		m.Write(sts)
		return base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
	}
	parts := strings.Split(string(sts), "\n")
	if len(parts) != 4 || parts[0] != "AWS4-HMAC-SHA256" {
		return "", errors.New("invalid s3 v4 string to sign")
	}
	scope := strings.Split(parts[2], "/")
	if len(scope) != 4 || scope[3] != "aws4_request" || !slices.Contains([]string{"s3", "iam", "sts"}, scope[2]) {
		return "", errors.New("invalid s3 v4 credential scope")
	}
	sign := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	key := []byte("AWS4" + secret)
	for _, part := range scope {
		key = sign(key, part)
	}
	return hex.EncodeToString(sign(key, string(sts))), nil
}
