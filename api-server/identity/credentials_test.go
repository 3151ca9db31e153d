package identity_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/store"
)

// credEnv is env with a credential key, and users around alice (member
// of demo): bob (member of demo too), carol (member of another project)
// and rita (reader of demo).
type credEnv struct {
	*env
	bob, carol, rita string // project-scoped tokens
	ids              map[string]string
}

func newCredEnv(t *testing.T, e *env) *credEnv {
	t.Helper()
	ctx := context.Background()
	key := bytes.Repeat([]byte{7}, identity.CredentialKeySize)
	k, err := identity.NewCredentialKey(key)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = identity.New(e.st, identity.Options{PublicHost: "cloud.example", TokenTTL: time.Hour, Logger: quiet(),
		PasswordHashRounds: identity.MinPasswordHashRounds, CredentialKey: k})
	srv := httptest.NewServer(e.svc.Handler())
	t.Cleanup(srv.Close)
	e.srv = srv
	if _, err := identity.EnsureProject(ctx, e.st, "other", ""); err != nil {
		t.Fatal(err)
	}
	c := &credEnv{env: e, ids: map[string]string{}}
	for _, u := range [][3]string{{"bob", "demo", "member"}, {"carol", "other", "member"}, {"rita", "demo", "reader"}} {
		if _, err := identity.EnsureUser(ctx, e.st, u[0], u[0]+"pw", "", identity.MinPasswordHashRounds); err != nil {
			t.Fatal(err)
		}
		if err := identity.Grant(ctx, e.st, u[0], u[1], u[2]); err != nil {
			t.Fatal(err)
		}
	}
	c.bob = e.token(passwordAuth("bob", "bobpw", projectScope("demo")))
	c.carol = e.token(passwordAuth("carol", "carolpw", projectScope("other")))
	c.rita = e.token(passwordAuth("rita", "ritapw", projectScope("demo")))
	for _, n := range []string{"alice", "bob", "demo", "other"} {
		var id string
		if n == "demo" || n == "other" {
			e.st.DB.Model(&store.Project{}).Where("name = ?", n).Pluck("id", &id)
		} else {
			e.st.DB.Model(&store.User{}).Where("name = ?", n).Pluck("id", &id)
		}
		c.ids[n] = id
	}
	return c
}

func credBody(user, project, typ, blob string) map[string]any {
	c := map[string]any{"user_id": user, "type": typ, "blob": blob}
	if project != "" {
		c["project_id"] = project
	}
	return map[string]any{"credential": c}
}

// TestCredentials: /v3/credentials to Keystone's contract and policy:
// the owner or an admin reads and writes a credential, anyone else is
// told it does not exist; a reader's token writes nothing; an ec2
// credential's id is its access key's hash and its blob is encrypted at
// rest, bound to its row.
func TestCredentials(t *testing.T) { forEachDB(t, testCredentials) }

func testCredentials(t *testing.T, e0 *env) {
	e := newCredEnv(t, e0)
	alice, bob, demo := e.ids["alice"], e.ids["bob"], e.ids["demo"]
	blob := `{"access":"181920","secret":"secretKey"}`
	r := e.do("POST", "/v3/credentials", e.member, credBody(alice, demo, "ec2", blob))
	e.want(r, http.StatusCreated)
	cr := obj(r.body["credential"])
	sum := sha256.Sum256([]byte("181920"))
	ec2ID := hex.EncodeToString(sum[:])
	if cr["id"] != ec2ID || cr["blob"] != blob || cr["user_id"] != alice || cr["project_id"] != demo || cr["type"] != "ec2" ||
		obj(cr["links"])["self"] != "http://cloud.example:5000/v3/credentials/"+ec2ID &&
			!strings.HasSuffix(obj(cr["links"])["self"].(string), "/v3/credentials/"+ec2ID) {
		t.Fatalf("created credential %s", r.raw)
	}
	// At rest: sealed, not the blob.
	var row store.Credential
	if err := e.st.DB.Where("id = ?", ec2ID).Take(&row).Error; err != nil {
		t.Fatal(err)
	}
	if row.KeyHash == "" || bytes.Contains(row.Blob, []byte("secretKey")) || bytes.Contains(row.Blob, []byte("181920")) {
		t.Fatalf("stored blob %q (key %q) is not encrypted", row.Blob, row.KeyHash)
	}
	e.want(e.do("POST", "/v3/credentials", e.member, credBody(alice, demo, "ec2", blob)), http.StatusConflict)
	for _, bad := range []map[string]any{
		credBody(alice, "", "ec2", `{"access":"x","secret":"y"}`),        // ec2 needs a project
		credBody(alice, demo, "ec2", `{"access":"x"}`),                   // and a secret
		credBody(alice, demo, "ec2", `not json`),                         // in a JSON blob
		{"credential": map[string]any{"user_id": alice, "blob": "b"}},    // no type
		{"credential": map[string]any{"user_id": alice, "type": "cert"}}, // no blob
		{"credential": map[string]any{"type": "cert", "blob": "b"}},      // no user
	} {
		e.want(e.do("POST", "/v3/credentials", e.member, bad), http.StatusBadRequest)
	}
	e.want(e.do("POST", "/v3/credentials", e.member, credBody(alice, "nosuchproject", "cert", "b")), http.StatusNotFound)
	r = e.do("POST", "/v3/credentials", e.member, credBody(alice, "", "cert", "-----BEGIN CERTIFICATE-----"))
	e.want(r, http.StatusCreated)
	certID := e.id(r, "credential")
	if len(certID) != 32 || obj(r.body["credential"])["project_id"] != nil {
		t.Fatalf("cert credential %s", r.raw)
	}

	ids := func(tok, query string) []string {
		t.Helper()
		r := e.do("GET", "/v3/credentials"+query, tok, nil)
		e.want(r, http.StatusOK)
		var out []string
		for _, c := range r.body["credentials"].([]any) {
			out = append(out, obj(c)["id"].(string))
		}
		slices.Sort(out)
		return out
	}
	both := []string{certID, ec2ID}
	slices.Sort(both)
	if got := ids(e.member, ""); !slices.Equal(got, both) {
		t.Fatalf("alice lists %v, want %v", got, both)
	}
	if got := ids(e.member, "?type=ec2"); !slices.Equal(got, []string{ec2ID}) {
		t.Fatalf("alice lists type=ec2 %v", got)
	}
	if got := ids(e.admin, "?user_id="+alice); !slices.Equal(got, both) {
		t.Fatalf("admin lists alice's %v", got)
	}

	// Another user of the same project, a user of another project: not found.
	for _, tok := range []string{e.bob, e.carol} {
		if got := ids(tok, ""); len(got) != 0 {
			t.Fatalf("another user lists %v", got)
		}
		if got := ids(tok, "?user_id="+alice); len(got) != 0 {
			t.Fatalf("another user lists alice's %v", got)
		}
		e.want(e.do("GET", "/v3/credentials/"+ec2ID, tok, nil), http.StatusNotFound)
		e.want(e.do("PATCH", "/v3/credentials/"+ec2ID, tok, map[string]any{"credential": map[string]any{"blob": blob}}), http.StatusNotFound)
		e.want(e.do("DELETE", "/v3/credentials/"+ec2ID, tok, nil), http.StatusNotFound)
		e.want(e.do("POST", "/v3/credentials", tok, credBody(alice, "", "cert", "b")), http.StatusForbidden)
	}
	// A reader reads its own but writes nothing.
	e.want(e.do("GET", "/v3/credentials", e.rita, nil), http.StatusOK)
	e.want(e.do("POST", "/v3/credentials", e.rita, credBody(e.idOf("rita"), "", "cert", "b")), http.StatusForbidden)
	// No, a garbage or a revoked token: 401.
	revoked := e.token(passwordAuth("alice", "alicepw", projectScope("demo")))
	e.want(e.do("DELETE", "/v3/auth/tokens", revoked, nil, "X-Subject-Token", revoked), http.StatusNoContent)
	for _, tok := range []string{"", "garbage", revoked} {
		e.want(e.do("GET", "/v3/credentials", tok, nil), http.StatusUnauthorized)
		e.want(e.do("GET", "/v3/credentials/"+ec2ID, tok, nil), http.StatusUnauthorized)
		e.want(e.do("POST", "/v3/credentials", tok, credBody(alice, "", "cert", "b")), http.StatusUnauthorized)
		e.want(e.do("DELETE", "/v3/credentials/"+ec2ID, tok, nil), http.StatusUnauthorized)
	}

	// Update: a new secret; the access key (the id's source) stays.
	blob2 := `{"access":"181920","secret":"mySecret"}`
	r = e.do("PATCH", "/v3/credentials/"+ec2ID, e.member, map[string]any{"credential": map[string]any{"blob": blob2}})
	e.want(r, http.StatusOK)
	if obj(r.body["credential"])["blob"] != blob2 {
		t.Fatalf("updated %s", r.raw)
	}
	if r := e.do("GET", "/v3/credentials/"+ec2ID, e.member, nil); obj(r.body["credential"])["blob"] != blob2 {
		t.Fatalf("after update %s", r.raw)
	}
	e.want(e.do("PATCH", "/v3/credentials/"+ec2ID, e.member, map[string]any{"credential": map[string]any{
		"blob": `{"access":"other","secret":"s"}`}}), http.StatusBadRequest)
	e.want(e.do("PATCH", "/v3/credentials/"+ec2ID, e.member, map[string]any{"credential": map[string]any{"user_id": bob}}), http.StatusForbidden)
	e.want(e.do("PATCH", "/v3/credentials/"+ec2ID, e.rita, map[string]any{"credential": map[string]any{"blob": blob2}}), http.StatusForbidden)
	// An admin reads and changes anyone's.
	r = e.do("PATCH", "/v3/credentials/"+certID, e.admin, map[string]any{"credential": map[string]any{"blob": "new"}})
	e.want(r, http.StatusOK)
	if r := e.do("GET", "/v3/credentials/"+certID, e.member, nil); obj(r.body["credential"])["blob"] != "new" {
		t.Fatalf("after the admin's update %s", r.raw)
	}

	// A sealed blob moved to another row does not open there.
	var sealed store.Credential
	if err := e.st.DB.Where("id = ?", ec2ID).Take(&sealed).Error; err != nil || len(sealed.Blob) == 0 {
		t.Fatalf("sealed row %v, %v", sealed, err)
	}
	if err := e.st.DB.Model(&store.Credential{}).Where("id = ?", certID).Update("blob", sealed.Blob).Error; err != nil {
		t.Fatal(err)
	}
	e.want(e.do("GET", "/v3/credentials/"+certID, e.member, nil), http.StatusInternalServerError)

	e.want(e.do("DELETE", "/v3/credentials/"+certID, e.admin, nil), http.StatusNoContent)
	e.want(e.do("DELETE", "/v3/credentials/"+ec2ID, e.member, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v3/credentials/"+ec2ID, e.member, nil), http.StatusNotFound)
	e.want(e.do("DELETE", "/v3/credentials/"+ec2ID, e.member, nil), http.StatusNotFound)

	// Deleting a user deletes its credentials.
	e.want(e.do("POST", "/v3/credentials", e.bob, credBody(bob, demo, "ec2", `{"access":"b","secret":"s"}`)), http.StatusCreated)
	e.want(e.do("DELETE", "/v3/users/"+bob, e.admin, nil), http.StatusNoContent)
	var n int64
	e.st.DB.Model(&store.Credential{}).Where("user_id = ?", bob).Count(&n)
	if n != 0 {
		t.Fatalf("%d credentials of a deleted user left", n)
	}
}

func (e *credEnv) idOf(user string) string {
	var id string
	e.st.DB.Model(&store.User{}).Where("name = ?", user).Pluck("id", &id)
	return id
}

// TestEC2Credentials: OS-EC2 makes, lists, shows and deletes a user's ec2
// credentials (rows of /v3/credentials), for the user or an admin only;
// and /v3/s3tokens gives a token for an S3 request signed with one's
// secret (AWS signature 4 and 2), and nothing for a wrong signature.
func TestEC2Credentials(t *testing.T) { forEachDB(t, testEC2Credentials) }

func testEC2Credentials(t *testing.T, e0 *env) {
	e := newCredEnv(t, e0)
	alice, demo := e.ids["alice"], e.ids["demo"]
	base := "/v3/users/" + alice + "/credentials/OS-EC2"
	e.want(e.do("POST", base, e.member, map[string]any{}), http.StatusBadRequest)
	e.want(e.do("POST", base, e.member, map[string]any{"tenant_id": "nosuch"}), http.StatusNotFound)
	e.want(e.do("POST", base, e.rita, map[string]any{"tenant_id": demo}), http.StatusForbidden)
	e.want(e.do("POST", base, e.bob, map[string]any{"tenant_id": demo}), http.StatusNotFound)
	e.want(e.do("POST", base, "garbage", map[string]any{"tenant_id": demo}), http.StatusUnauthorized)
	r := e.do("POST", base, e.member, map[string]any{"tenant_id": demo})
	e.want(r, http.StatusCreated)
	c := obj(r.body["credential"])
	access, secret := c["access"].(string), c["secret"].(string)
	if access == "" || secret == "" || c["user_id"] != alice || c["tenant_id"] != demo {
		t.Fatalf("ec2 credential %s", r.raw)
	}
	r = e.do("GET", base+"/"+access, e.member, nil)
	e.want(r, http.StatusOK)
	if g := obj(r.body["credential"]); g["secret"] != secret || g["access"] != access {
		t.Fatalf("get %s", r.raw)
	}
	r = e.do("GET", base, e.admin, nil)
	e.want(r, http.StatusOK)
	if l := r.body["credentials"].([]any); len(l) != 1 || obj(l[0])["secret"] != secret {
		t.Fatalf("list %s", r.raw)
	}
	sum := sha256.Sum256([]byte(access))
	if r := e.do("GET", "/v3/credentials/"+hex.EncodeToString(sum[:]), e.member, nil); r.status != http.StatusOK ||
		!strings.Contains(obj(r.body["credential"])["blob"].(string), secret) {
		t.Fatalf("the same credential in /v3/credentials: %s", r.raw)
	}
	for _, tok := range []string{e.bob, e.carol} {
		e.want(e.do("GET", base, tok, nil), http.StatusNotFound)
		e.want(e.do("GET", base+"/"+access, tok, nil), http.StatusNotFound)
		e.want(e.do("DELETE", base+"/"+access, tok, nil), http.StatusNotFound)
	}
	e.want(e.do("GET", "/v3/users/"+e.ids["bob"]+"/credentials/OS-EC2/"+access, e.bob, nil), http.StatusNotFound)

	// S3 tokens, without a token of their own.
	s3 := func(sts, sig string) resp {
		return e.do("POST", "/v3/s3tokens", "", map[string]any{"credentials": map[string]any{
			"access": access, "token": base64.StdEncoding.EncodeToString([]byte(sts)), "signature": sig}})
	}
	sts4 := "AWS4-HMAC-SHA256\n20261207T101010Z\n20261207/RegionOne/s3/aws4_request\n" + strings.Repeat("ab", 32)
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	k := mac(mac(mac(mac([]byte("AWS4"+secret), "20261207"), "RegionOne"), "s3"), "aws4_request")
	sig4 := hex.EncodeToString(mac(k, sts4))
	r = s3(sts4, sig4)
	e.want(r, http.StatusOK)
	tok := r.header.Get("X-Subject-Token")
	tb := obj(r.body["token"])
	if tok == "" || obj(tb["project"])["id"] != demo || obj(tb["user"])["id"] != alice {
		t.Fatalf("s3 token %s", r.raw)
	}
	if cr, err := e.svc.Validate(context.Background(), tok); err != nil || cr.ProjectID != demo || !cr.HasRole("member") {
		t.Fatalf("s3 token validates as %+v, %v", cr, err)
	}
	e.want(s3(sts4, strings.Repeat("0", 64)), http.StatusUnauthorized)
	e.want(s3(strings.Replace(sts4, "/s3/", "/ec2/", 1), sig4), http.StatusUnauthorized)
	sts2 := "GET\n\n\nMon, 07 Dec 2026 10:10:10 GMT\n/bucket/key"
	m1 := hmac.New(sha1.New, []byte(secret))
	m1.Write([]byte(sts2))
	e.want(s3(sts2, base64.StdEncoding.EncodeToString(m1.Sum(nil))), http.StatusOK)
	e.want(s3(sts2, base64.StdEncoding.EncodeToString(m1.Sum([]byte("x")))), http.StatusUnauthorized)
	e.want(e.do("POST", "/v3/s3tokens", "", map[string]any{"credentials": map[string]any{
		"access": "nosuch", "token": base64.StdEncoding.EncodeToString([]byte(sts2)), "signature": "x"}}), http.StatusUnauthorized)
	e.want(e.do("POST", "/v3/s3tokens", "", map[string]any{}), http.StatusBadRequest)

	e.want(e.do("DELETE", base+"/"+access, e.rita, nil), http.StatusForbidden)
	e.want(e.do("DELETE", base+"/"+access, e.member, nil), http.StatusNoContent)
	e.want(e.do("GET", base+"/"+access, e.member, nil), http.StatusNotFound)
	e.want(s3(sts4, sig4), http.StatusUnauthorized)
}

// TestLoadCredentialKey: a key file is the base64 of 32 bytes (a trailing
// newline, as `base64` writes it, is fine); anything else is refused.
func TestLoadCredentialKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := identity.LoadCredentialKey(write("good", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))+"\n")); err != nil {
		t.Fatalf("good key: %v", err)
	}
	for name, content := range map[string]string{
		"short":  base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 16)),
		"notb64": strings.Repeat("!", 44),
		"empty":  "",
	} {
		if _, err := identity.LoadCredentialKey(write(name, content)); err == nil {
			t.Errorf("%s key accepted", name)
		}
	}
	if _, err := identity.LoadCredentialKey(dir + "/missing"); err == nil {
		t.Error("a missing key file accepted")
	}
}
