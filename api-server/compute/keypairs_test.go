package compute

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Tempest's import key (test_keypair_create_with_pub_key) and its MD5
// fingerprint as ssh-keygen -l -E md5 prints it.
const (
	tempestPubKey   = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCsNe3/1ILNCqFyfYWDeTKLD6jEXC2OQHLmietMWW+/vdaZq7KZEwO0jhglaFjU1mpqq4Gz5RX156sCTNM9vRbwKAxfsdF9laBYVsex3m3Wmui3uYrKyumsoJn2g9GNnG1PI1mrVjZ61i0GY3khna+wzlTpCCmy5HNlrmbj3XLqBUpipTOXmsnr4sChzC53KCd8LXuwc1i/CZPvF+3XipvAgFSE53pCtLOeB1kYMOBaiUPLQTWXR3JpckqFIQwhIH0zoHlJvZE8hh90XcPojYN56tI0OlrGqojbediJYD0rUsJu4weZpbn8vilb3JuDY+jwssnSA8wzBx3A/8y9Pp1B nova@ubuntu"
	tempestPubKeyFP = "61:5f:fe:c7:e0:fd:d7:4a:2b:52:6e:a6:f5:bf:da:27"
)

// testCert is a self-signed certificate made with openssl req -x509; its
// SHA-1 fingerprint as openssl x509 -fingerprint -sha1 prints it.
const (
	testCert = `-----BEGIN CERTIFICATE-----
MIIBgzCCASmgAwIBAgIUAUBqotDDYvAILALiRazhJB/j/mswCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMY2Fwc3VsZS10ZXN0MB4XDTI2MTIwNjAzNTYxNFoXDTM2MTIw
MzAzNTYxNFowFzEVMBMGA1UEAwwMY2Fwc3VsZS10ZXN0MFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEKlhT9jSZTPa5Gz3BFm1RdktyiJD/oY+1PYbs1mSbe0XN46eK
1QoviUc8aaxJIspG7wAoYkTHgnMvMzAD348jZ6NTMFEwHQYDVR0OBBYEFHKCsg/W
kOtO/Q0wMoeH0yjv7ziQMB8GA1UdIwQYMBaAFHKCsg/WkOtO/Q0wMoeH0yjv7ziQ
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgGRy7AMFQvFqRYAeo
83E7z4UO6TWo8m7fInbRhh4jPtoCIQC7dJu9CfUcHJJbOg/0+EYfQW5L6+AntEbd
rVHLZJNdcA==
-----END CERTIFICATE-----
`
	testCertFP = "cf:45:09:15:bb:78:38:55:64:1c:d5:2b:51:4b:f5:2e:b2:e0:1c:98"
)

var md5FP = regexp.MustCompile(`^([0-9a-f]{2}:){15}[0-9a-f]{2}$`)

func keypairBody(fields map[string]any) string {
	b, _ := json.Marshal(map[string]any{"keypair": fields})
	return string(b)
}

func mv(v apiVersion) []string { return []string{"X-OpenStack-Nova-API-Version", v.String()} }

// TestContractKeypairs runs Tempest's keypair flows (create generated and
// imported, list, show, delete) through Tempest's schemas at the
// microversions where the API changes, and checks the values Tempest
// compares: the create response minus private_key and user_id is exactly
// the list entry.
func TestContractKeypairs(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	for _, v := range []apiVersion{{2, 1}, {2, 2}, {2, 9}, {2, 10}, {2, 34}, {2, 35}, {2, 60}} {
		t.Run(v.String(), func(t *testing.T) {
			gen := f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/os-keypairs", keypairBody(map[string]any{"name": "gen"}), "keypairs", "create_keypair"})
			imp := f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/os-keypairs",
				keypairBody(map[string]any{"name": "imp", "public_key": tempestPubKey}), "keypairs", "create_keypair"})
			g, i := gen["keypair"].(map[string]any), imp["keypair"].(map[string]any)
			if g["private_key"] == nil || g["user_id"] != "u-demo" || !md5FP.MatchString(g["fingerprint"].(string)) {
				t.Errorf("generated keypair %v: want a private key, the caller's user_id and an MD5 fingerprint", g)
			}
			if _, has := i["private_key"]; has || i["fingerprint"] != tempestPubKeyFP || i["public_key"] != tempestPubKey {
				t.Errorf("imported keypair %v: want no private key, fingerprint %s and the key as given", i, tempestPubKeyFP)
			}
			if v.AtLeast(2) && (g["type"] != "ssh" || i["type"] != "ssh") {
				t.Errorf("type of generated %v / imported %v, want ssh", g["type"], i["type"])
			}
			list := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-keypairs", "", "keypairs", "list_keypairs"})
			items := list["keypairs"].([]any)
			if len(items) != 2 {
				t.Fatalf("list = %v, want gen and imp", items)
			}
			for n, created := range []map[string]any{g, i} {
				want := map[string]any{}
				for k, val := range created {
					if k != "private_key" && k != "user_id" {
						want[k] = val
					}
				}
				got := items[n].(map[string]any)["keypair"]
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("list entry %v, want the created keypair %v", got, want)
				}
			}
			show := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-keypairs/imp", "", "keypairs", "get_keypair"})
			kp := show["keypair"].(map[string]any)
			if kp["name"] != "imp" || kp["user_id"] != "u-demo" || kp["deleted"] != false || kp["updated_at"] != nil || kp["id"].(float64) < 1 {
				t.Errorf("show = %v", kp)
			}
			for _, name := range []string{"gen", "imp"} {
				f.check(t, ts, v, contractCall{"demo", "DELETE", "/v2.1/os-keypairs/" + name, "", "keypairs", "delete_keypair"})
			}
			if v.AtLeast(2) {
				checkX509Keypairs(t, f, ts, v)
			}
		})
	}
}

// checkX509Keypairs is Tempest's test_keypairsv22_create_list_show_with_type
// plus an imported certificate.
func checkX509Keypairs(t *testing.T, f *fixture, ts tempestSchemas, v apiVersion) {
	t.Helper()
	gen := f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/os-keypairs", keypairBody(map[string]any{"name": "x-gen", "type": "x509"}), "keypairs", "create_keypair"})
	imp := f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/os-keypairs",
		keypairBody(map[string]any{"name": "x-imp", "type": "x509", "public_key": testCert}), "keypairs", "create_keypair"})
	g := gen["keypair"].(map[string]any)
	block, _ := pem.Decode([]byte(g["public_key"].(string)))
	if block == nil || g["type"] != "x509" || g["private_key"] == nil {
		t.Fatalf("generated x509 keypair %v: want a PEM certificate and a private key", g)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || cert.Subject.CommonName != "u-demo" {
		t.Errorf("generated certificate: %v, CN %q; want CN u-demo", err, cert.Subject.CommonName)
	}
	if fp := imp["keypair"].(map[string]any)["fingerprint"]; fp != testCertFP {
		t.Errorf("imported certificate fingerprint %v, want %s", fp, testCertFP)
	}
	show := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-keypairs/x-gen", "", "keypairs", "get_keypair"})
	if show["keypair"].(map[string]any)["type"] != "x509" {
		t.Errorf("show of an x509 keypair: %v", show)
	}
	list := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-keypairs", "", "keypairs", "list_keypairs"})
	for _, it := range list["keypairs"].([]any) {
		if kp := it.(map[string]any)["keypair"].(map[string]any); kp["type"] != "x509" {
			t.Errorf("list entry %v, want type x509", kp)
		}
	}
	for _, name := range []string{"x-gen", "x-imp"} {
		f.check(t, ts, v, contractCall{"demo", "DELETE", "/v2.1/os-keypairs/" + name, "", "keypairs", "delete_keypair"})
	}
}

// TestGeneratedKeyPairMatches: the private key handed back is the one of
// the public key stored, in the PEM form ssh and Nova use.
func TestGeneratedKeyPairMatches(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do("POST", "/v2.1/os-keypairs", "demo", keypairBody(map[string]any{"name": "k"}), mv(apiVersion{2, 10})...)
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	kp := body["keypair"].(map[string]any)
	priv := kp["private_key"].(string)
	if !strings.HasPrefix(priv, "-----BEGIN RSA PRIVATE KEY-----") {
		t.Errorf("private key is not a PKCS#1 PEM: %.40q", priv)
	}
	signer, err := ssh.ParsePrivateKey([]byte(priv))
	if err != nil {
		t.Fatalf("parse private key: %v", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(kp["public_key"].(string)))
	if err != nil {
		t.Fatalf("parse public key: %v", err)
	}
	if !bytes.Equal(signer.PublicKey().Marshal(), pub.Marshal()) {
		t.Error("private key does not match the public key")
	}
	if pub.Type() != "ssh-rsa" || ssh.FingerprintLegacyMD5(pub) != kp["fingerprint"] {
		t.Errorf("type %s, fingerprint %v, want ssh-rsa and %s", pub.Type(), kp["fingerprint"], ssh.FingerprintLegacyMD5(pub))
	}
	if k, ok := pub.(ssh.CryptoPublicKey); !ok || k.CryptoPublicKey() == nil {
		t.Error("no RSA key inside")
	}
}

func TestKeypairBadInput(t *testing.T) {
	f := newFixture(t)
	v21, v22, v29, v210 := apiVersion{2, 1}, apiVersion{2, 2}, apiVersion{2, 9}, apiVersion{2, 10}
	cases := []struct {
		name string
		v    apiVersion
		body string
		msg  string // part of the message, "" = any
	}{
		{"junk key (Tempest)", v21, keypairBody(map[string]any{"name": "a", "public_key": "ssh-rsa JUNK nova@ubuntu"}), "Keypair data is invalid: "},
		{"blank key (Tempest)", v21, keypairBody(map[string]any{"name": "a", "public_key": " "}), "Keypair data is invalid: "},
		{"oversized key (Tempest)", v21, keypairBody(map[string]any{"name": "a", "public_key": "ssh-rsa " + strings.Repeat("A", 2048) + " openstack@ubuntu"}), "Keypair data is invalid: "},
		{"two keys", v21, keypairBody(map[string]any{"name": "a", "public_key": tempestPubKey + "\n" + tempestPubKey}), "Keypair data is invalid: "},
		{"key options", v21, keypairBody(map[string]any{"name": "a", "public_key": `command="sh" ` + tempestPubKey}), "Keypair data is invalid: "},
		{"ssh key as x509", v22, keypairBody(map[string]any{"name": "a", "type": "x509", "public_key": tempestPubKey}), "Keypair data is invalid: "},
		{"certificate as ssh", v22, keypairBody(map[string]any{"name": "a", "public_key": testCert}), "Keypair data is invalid: "},
		{"empty name (Tempest)", v21, keypairBody(map[string]any{"name": ""}), "name"},
		{"long name (Tempest)", v21, keypairBody(map[string]any{"name": "keypair-" + strings.Repeat("0", 252)}), "name"},
		{"bad characters (Tempest)", v21, keypairBody(map[string]any{"name": `key_/.\@:`}), "name"},
		{"dot before 2.92", v210, keypairBody(map[string]any{"name": "my.key"}), "name"},
		{"no name", v21, keypairBody(map[string]any{"public_key": tempestPubKey}), "'name' is a required property"},
		{"name not a string", v21, keypairBody(map[string]any{"name": 5}), "name"},
		{"type before 2.2", v21, keypairBody(map[string]any{"name": "a", "type": "ssh"}), "type"},
		{"unknown type", v22, keypairBody(map[string]any{"name": "a", "type": "pgp"}), "type"},
		{"user_id before 2.10", v29, keypairBody(map[string]any{"name": "a", "user_id": "u-demo"}), "user_id"},
		{"unknown field", v210, keypairBody(map[string]any{"name": "a", "color": "red"}), "color"},
		{"no keypair", v21, `{"name":"a"}`, "keypair"},
		{"keypair not an object", v21, `{"keypair":"a"}`, "keypair"},
		{"malformed JSON", v21, `{"keypair":`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := f.do("POST", "/v2.1/os-keypairs", "demo", c.body, mv(c.v)...)
			expectFault(t, resp, body, 400, "badRequest")
			if msg := body["badRequest"].(map[string]any)["message"].(string); !strings.Contains(msg, c.msg) {
				t.Errorf("message %q lacks %q", msg, c.msg)
			}
		})
	}
	resp, body := f.do("GET", "/v2.1/os-keypairs", "demo", "")
	if resp.StatusCode != 200 || len(body["keypairs"].([]any)) != 0 {
		t.Errorf("a refused create stored something: %v", body)
	}
	// Nova's allowed characters are accepted: letters, digits, space, _ and -.
	resp, body = f.do("POST", "/v2.1/os-keypairs", "demo", keypairBody(map[string]any{"name": "My key_1-x", "public_key": tempestPubKey}))
	if resp.StatusCode != 200 {
		t.Errorf("valid name refused: %d %v", resp.StatusCode, body)
	}
	// A reader cannot create.
	resp, body = f.do("POST", "/v2.1/os-keypairs", "read", keypairBody(map[string]any{"name": "r"}))
	expectFault(t, resp, body, 403, "forbidden")
}

func TestKeypairConflictAndNotFound(t *testing.T) {
	f := newFixture(t)
	for _, v := range []apiVersion{{2, 1}, {2, 10}} {
		resp, body := f.do("POST", "/v2.1/os-keypairs", "demo", keypairBody(map[string]any{"name": "dup", "public_key": tempestPubKey}), mv(v)...)
		if resp.StatusCode >= 300 {
			t.Fatalf("create: %d %v", resp.StatusCode, body)
		}
		resp, body = f.do("POST", "/v2.1/os-keypairs", "demo", keypairBody(map[string]any{"name": "dup"}), mv(v)...)
		expectFault(t, resp, body, 409, "conflictingRequest")
		// The same name is free for another user.
		resp, body = f.do("POST", "/v2.1/os-keypairs", "other", keypairBody(map[string]any{"name": "dup", "public_key": tempestPubKey}), mv(v)...)
		if resp.StatusCode >= 300 {
			t.Fatalf("another user's create of the same name: %d %v", resp.StatusCode, body)
		}
		for _, tok := range []string{"demo", "other"} {
			if resp, body := f.do("DELETE", "/v2.1/os-keypairs/dup", tok, "", mv(v)...); resp.StatusCode >= 300 {
				t.Fatalf("delete: %d %v", resp.StatusCode, body)
			}
		}
		resp, body = f.do("DELETE", "/v2.1/os-keypairs/dup", "demo", "", mv(v)...)
		expectFault(t, resp, body, 404, "itemNotFound")
		resp, body = f.do("GET", "/v2.1/os-keypairs/dup", "demo", "", mv(v)...)
		expectFault(t, resp, body, 404, "itemNotFound")
	}
}

// TestKeypairsBelongToTheUser: another user (another project) sees none of
// them; from 2.10 an admin acts on any user's with user_id, a member only
// on their own.
func TestKeypairsBelongToTheUser(t *testing.T) {
	f := newFixture(t)
	v210 := mv(apiVersion{2, 10})
	resp, body := f.do("POST", "/v2.1/os-keypairs", "admin", keypairBody(map[string]any{"name": "for-demo", "user_id": "u-demo", "public_key": tempestPubKey}), v210...)
	if resp.StatusCode != 201 || body["keypair"].(map[string]any)["user_id"] != "u-demo" {
		t.Fatalf("admin create for u-demo: %d %v", resp.StatusCode, body)
	}
	if _, body := f.do("GET", "/v2.1/os-keypairs", "demo", "", v210...); len(body["keypairs"].([]any)) != 1 {
		t.Errorf("demo's list = %v, want the keypair the admin made for them", body)
	}
	if _, body := f.do("GET", "/v2.1/os-keypairs", "other", "", v210...); len(body["keypairs"].([]any)) != 0 {
		t.Errorf("another user's list = %v, want empty", body)
	}
	resp, body = f.do("GET", "/v2.1/os-keypairs/for-demo", "other", "", v210...)
	expectFault(t, resp, body, 404, "itemNotFound")
	// The admin's own list is the admin's; with user_id it is demo's.
	if _, body := f.do("GET", "/v2.1/os-keypairs", "admin", "", v210...); len(body["keypairs"].([]any)) != 0 {
		t.Errorf("admin's own list = %v, want empty", body)
	}
	if _, body := f.do("GET", "/v2.1/os-keypairs?user_id=u-demo", "admin", "", v210...); len(body["keypairs"].([]any)) != 1 {
		t.Errorf("admin's list of u-demo = %v", body)
	}
	// Below 2.10 user_id is not a parameter: the admin sees their own.
	if _, body := f.do("GET", "/v2.1/os-keypairs?user_id=u-demo", "admin", "", mv(apiVersion{2, 9})...); len(body["keypairs"].([]any)) != 0 {
		t.Errorf("admin's list at 2.9 with user_id = %v, want the admin's own (none)", body)
	}
	resp, body = f.do("GET", "/v2.1/os-keypairs/for-demo?user_id=u-demo", "admin", "", v210...)
	if resp.StatusCode != 200 || body["keypair"].(map[string]any)["user_id"] != "u-demo" {
		t.Errorf("admin show of u-demo's keypair: %d %v", resp.StatusCode, body)
	}
	// A member naming another user is refused, whatever the action.
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v2.1/os-keypairs", keypairBody(map[string]any{"name": "x", "user_id": "u-demo"})},
		{"GET", "/v2.1/os-keypairs?user_id=u-demo", ""},
		{"GET", "/v2.1/os-keypairs/for-demo?user_id=u-demo", ""},
		{"DELETE", "/v2.1/os-keypairs/for-demo?user_id=u-demo", ""},
	} {
		resp, body := f.do(c.method, c.path, "other", c.body, v210...)
		expectFault(t, resp, body, 403, "forbidden")
	}
	// Naming oneself is fine.
	resp, body = f.do("POST", "/v2.1/os-keypairs", "demo", keypairBody(map[string]any{"name": "mine", "user_id": "u-demo", "public_key": tempestPubKey}), v210...)
	if resp.StatusCode != 201 {
		t.Errorf("member create naming themself: %d %v", resp.StatusCode, body)
	}
	if resp, body := f.do("DELETE", "/v2.1/os-keypairs/for-demo?user_id=u-demo", "admin", "", v210...); resp.StatusCode != 204 {
		t.Fatalf("admin delete of u-demo's keypair: %d %v", resp.StatusCode, body)
	}
	if _, body := f.do("GET", "/v2.1/os-keypairs", "demo", "", v210...); len(body["keypairs"].([]any)) != 1 {
		t.Errorf("demo's list after the admin's delete = %v, want only 'mine'", body)
	}
}

func TestKeypairPaging(t *testing.T) {
	f := newFixture(t)
	for _, n := range []string{"e", "c", "a", "d", "b"} {
		if resp, body := f.do("POST", "/v2.1/os-keypairs", "demo", keypairBody(map[string]any{"name": n, "public_key": tempestPubKey})); resp.StatusCode != 200 {
			t.Fatalf("create %s: %d %v", n, resp.StatusCode, body)
		}
	}
	names := func(body map[string]any) string {
		var out []string
		for _, it := range body["keypairs"].([]any) {
			out = append(out, it.(map[string]any)["keypair"].(map[string]any)["name"].(string))
		}
		return strings.Join(out, ",")
	}
	v235 := mv(apiVersion{2, 35})
	var pages []string
	next := "/v2.1/os-keypairs?limit=2"
	for next != "" {
		resp, body := f.do("GET", next, "demo", "", v235...)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", next, resp.StatusCode, body)
		}
		pages = append(pages, names(body))
		next = ""
		if links, ok := body["keypairs_links"].([]any); ok {
			l := links[0].(map[string]any)
			u, err := url.Parse(l["href"].(string))
			if l["rel"] != "next" || err != nil {
				t.Fatalf("keypairs_links = %v", links)
			}
			next = u.Path + "?" + u.RawQuery
		}
		if len(pages) > 5 {
			t.Fatal("paging does not end")
		}
	}
	if got := strings.Join(pages, "|"); got != "a,b|c,d|e" {
		t.Errorf("pages = %s, want a,b|c,d|e", got)
	}
	resp, body := f.do("GET", "/v2.1/os-keypairs?marker=nope", "demo", "", v235...)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("GET", "/v2.1/os-keypairs?limit=-1", "demo", "", v235...)
	expectFault(t, resp, body, 400, "badRequest")
	// Before 2.35 there is no paging: everything, no links.
	_, body = f.do("GET", "/v2.1/os-keypairs?limit=2&marker=nope", "demo", "", mv(apiVersion{2, 34})...)
	if _, links := body["keypairs_links"]; names(body) != "a,b,c,d,e" || links {
		t.Errorf("list at 2.34 with limit = %v", body)
	}
}

func TestKeypairQuota(t *testing.T) {
	f := newFixture(t)
	for i := range 100 { // Nova's default key_pairs quota, per user
		if resp, body := f.do("POST", "/v2.1/os-keypairs", "demo", keypairBody(map[string]any{"name": fmt.Sprintf("k%d", i), "public_key": tempestPubKey})); resp.StatusCode != 200 {
			t.Fatalf("create %d: %d %v", i, resp.StatusCode, body)
		}
	}
	resp, body := f.do("POST", "/v2.1/os-keypairs", "demo", keypairBody(map[string]any{"name": "one-too-many", "public_key": tempestPubKey}))
	expectFault(t, resp, body, 403, "forbidden")
	if msg := body["forbidden"].(map[string]any)["message"]; msg != "Quota exceeded, too many key pairs." {
		t.Errorf("quota message %q", msg)
	}
	// The quota is the user's: another user still creates.
	if resp, body := f.do("POST", "/v2.1/os-keypairs", "other", keypairBody(map[string]any{"name": "k", "public_key": tempestPubKey})); resp.StatusCode != 200 {
		t.Errorf("another user's create: %d %v", resp.StatusCode, body)
	}
	// An admin's key_pairs quota for the project applies to its users.
	if err := f.st.DB.Create(&store.Project{ID: "p-other", Name: "other", DomainID: "default", Enabled: true}).Error; err != nil {
		t.Fatal(err)
	}
	if resp, body := f.do("PUT", "/v2.1/os-quota-sets/p-other", "admin", `{"quota_set":{"key_pairs":1}}`); resp.StatusCode != 200 {
		t.Fatalf("set key_pairs quota: %d %v", resp.StatusCode, body)
	}
	resp, body = f.do("POST", "/v2.1/os-keypairs", "other", keypairBody(map[string]any{"name": "k2", "public_key": tempestPubKey}))
	expectFault(t, resp, body, 403, "forbidden")
	if resp, body := f.do("PUT", "/v2.1/os-quota-sets/p-other", "admin", `{"quota_set":{"key_pairs":-1}}`); resp.StatusCode != 200 {
		t.Fatalf("unlimited key_pairs quota: %d %v", resp.StatusCode, body)
	}
	if resp, body := f.do("POST", "/v2.1/os-keypairs", "other", keypairBody(map[string]any{"name": "k2", "public_key": tempestPubKey})); resp.StatusCode != 200 {
		t.Errorf("create under an unlimited quota: %d %v", resp.StatusCode, body)
	}
}

// TestServerKeyName: a server boots with its user's keypair, keeps the key
// when the keypair goes, and the schedule request carries it.
func TestServerKeyName(t *testing.T) {
	f := newFixture(t)
	if resp, body := f.do("POST", "/v2.1/os-keypairs", "demo", keypairBody(map[string]any{"name": "k2", "public_key": tempestPubKey})); resp.StatusCode != 200 {
		t.Fatalf("create keypair: %d %v", resp.StatusCode, body)
	}
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"vm","imageRef":"`+f.image+`","flavorRef":"1","key_name":"k2"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("create server with key_name: %d %v", resp.StatusCode, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	var inst store.Instance
	if err := f.st.DB.First(&inst, "id = ?", id).Error; err != nil {
		t.Fatal(err)
	}
	if inst.KeyName == nil || *inst.KeyName != "k2" || inst.KeyData != tempestPubKey {
		t.Errorf("instance key_name %v, key_data %q; want k2 and the public key", inst.KeyName, inst.KeyData)
	}
	if sent := f.bus.Sent(bus.SchedulerQueue); len(sent) != 1 || sent[0].Kind != protocol.KindScheduleInstance {
		t.Fatalf("scheduler queue got %v", sent)
	}
	if resp, _ := f.do("DELETE", "/v2.1/os-keypairs/k2", "demo", ""); resp.StatusCode != 202 {
		t.Fatalf("delete keypair: %d", resp.StatusCode)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	if k := body["server"].(map[string]any)["key_name"]; k != "k2" {
		t.Errorf("key_name after the keypair's delete = %v, want k2", k)
	}
	f.st.DB.First(&inst, "id = ?", id)
	if inst.KeyData != tempestPubKey {
		t.Errorf("key_data after the keypair's delete = %q", inst.KeyData)
	}

	// Without a key, key_name stays null.
	plain := f.create("demo", "plain")
	_, body = f.do("GET", "/v2.1/servers/"+plain, "demo", "")
	if k, ok := body["server"].(map[string]any)["key_name"]; !ok || k != nil {
		t.Errorf("key_name of a server without a key = %v (present %v), want null", k, ok)
	}

	// Unknown, deleted, empty, or someone else's: 400, nothing created.
	if resp, body := f.do("POST", "/v2.1/os-keypairs", "other", keypairBody(map[string]any{"name": "theirs", "public_key": tempestPubKey})); resp.StatusCode != 200 {
		t.Fatalf("other's keypair: %d %v", resp.StatusCode, body)
	}
	for _, name := range []string{"nope", "k2", "", "theirs"} {
		resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"vm","imageRef":"`+f.image+`","flavorRef":"1","key_name":"`+name+`"}}`)
		expectFault(t, resp, body, 400, "badRequest")
		if msg := body["badRequest"].(map[string]any)["message"]; msg != "Invalid key_name provided." {
			t.Errorf("key_name %q: message %q", name, msg)
		}
	}
	var n int64
	f.st.DB.Model(&store.Instance{}).Count(&n)
	if n != 2 {
		t.Errorf("%d instances, want the 2 created (refused creates must leave nothing)", n)
	}
}
