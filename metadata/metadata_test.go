package metadata_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/metadata"
	"github.com/capsule-cloud/capsule/protocol"
)

const pubKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMetadataTestKeyMetadataTestKeyMetadat a@b"

func sample() protocol.InstanceMetadata {
	return protocol.InstanceMetadata{
		UUID: "0c5a8a7e-1f2b-4c3d-9e8f-001122334455", Name: "web1", Hostname: "web1", ProjectID: "p1",
		AvailabilityZone: "nova", LaunchIndex: 2, ReservationID: "r-abc", ImageID: "img1", FlavorName: "m1.tiny",
		KeyName: "k1", KeyData: pubKey, Meta: map[string]string{"role": "web"},
		UserData: base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\necho hi\n")),
		NICs: []protocol.NIC{{
			PortID: "11112222-3333-4444-5555-666677778888", NetworkID: "net1", MAC: "fa:16:3e:00:00:01", MTU: 1500,
			IPs:     []protocol.IP{{Address: "10.1.0.5", PrefixLen: 24, SubnetID: "s1"}, {Address: "fd00::5", PrefixLen: 64, SubnetID: "s2"}},
			Gateway: "10.1.0.1", DNS: []string{"10.1.0.2"},
		}},
	}
}

func render(t *testing.T, m protocol.InstanceMetadata) metadata.Tree {
	t.Helper()
	tree, err := metadata.Render(m)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func get(t *testing.T, tree metadata.Tree, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	metadata.Serve(rec, httptest.NewRequest(http.MethodGet, path, nil), tree)
	return rec.Code, rec.Body.String()
}

// meta_data.json has Nova's keys and values (nova/api/metadata/base.py
// and the documented example of the OpenStack metadata format).
func TestMetaDataJSON(t *testing.T) {
	tree := render(t, sample())
	for _, v := range []string{"latest", "2018-08-27", "2012-08-10"} {
		code, body := get(t, tree, "/openstack/"+v+"/meta_data.json")
		if code != 200 {
			t.Fatalf("%s: %d", v, code)
		}
		var md map[string]any
		if err := json.Unmarshal([]byte(body), &md); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"uuid": "0c5a8a7e-1f2b-4c3d-9e8f-001122334455", "name": "web1", "hostname": "web1", "project_id": "p1",
			"availability_zone": "nova", "launch_index": float64(2), "meta": map[string]any{"role": "web"},
			"public_keys": map[string]any{"k1": pubKey},
			"keys":        []any{map[string]any{"name": "k1", "type": "ssh", "data": pubKey}},
			"devices":     []any{}, "dedicated_cpus": []any{},
		}
		if !reflect.DeepEqual(md, want) {
			t.Errorf("%s meta_data.json = %v\nwant %v", v, md, want)
		}
	}
}

func TestNoKeyNoUserData(t *testing.T) {
	m := sample()
	m.KeyData, m.KeyName, m.UserData = "", "", ""
	tree := render(t, m)
	_, body := get(t, tree, "/openstack/latest/meta_data.json")
	if strings.Contains(body, "public_keys") || strings.Contains(body, `"keys"`) {
		t.Errorf("meta_data.json without a key has keys: %s", body)
	}
	for _, p := range []string{"/openstack/latest/user_data", "/latest/user-data", "/latest/meta-data/public-keys/0/openssh-key", "/latest/meta-data/public-keys/"} {
		if code, _ := get(t, tree, p); code != 404 {
			t.Errorf("GET %s without user data or key = %d, want 404", p, code)
		}
	}
	if _, list := get(t, tree, "/openstack/latest/"); strings.Contains(list, "user_data") {
		t.Errorf("listing has user_data: %q", list)
	}
}

func TestUserDataDecoded(t *testing.T) {
	tree := render(t, sample())
	for _, p := range []string{"/openstack/latest/user_data", "/openstack/2018-08-27/user_data", "/latest/user-data", "/2009-04-04/user-data"} {
		if code, body := get(t, tree, p); code != 200 || body != "#!/bin/sh\necho hi\n" {
			t.Errorf("GET %s = %d %q", p, code, body)
		}
	}
	m := sample()
	m.UserData = "not base64!"
	if _, err := metadata.Render(m); err == nil {
		t.Error("Render accepted user data that is not base64")
	}
}

// network_data.json follows Nova's format for static addresses (the
// documented example: links with ethernet_mac_address/mtu/vif_id,
// networks with ip_address/netmask/routes/network_id, dns services).
func TestNetworkDataJSON(t *testing.T) {
	_, body := get(t, render(t, sample()), "/openstack/latest/network_data.json")
	var nd map[string]any
	if err := json.Unmarshal([]byte(body), &nd); err != nil {
		t.Fatal(err)
	}
	dns := map[string]any{"type": "dns", "address": "10.1.0.2"}
	want := map[string]any{
		"links": []any{map[string]any{"id": "tap11112222-33", "vif_id": "11112222-3333-4444-5555-666677778888",
			"type": "ovs", "ethernet_mac_address": "fa:16:3e:00:00:01", "mtu": float64(1500)}},
		"networks": []any{
			map[string]any{"id": "network0", "link": "tap11112222-33", "network_id": "net1", "type": "ipv4",
				"ip_address": "10.1.0.5", "netmask": "255.255.255.0", "services": []any{dns},
				"routes": []any{map[string]any{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.1.0.1"}}},
			map[string]any{"id": "network1", "link": "tap11112222-33", "network_id": "net1", "type": "ipv6",
				"ip_address": "fd00::5", "netmask": "ffff:ffff:ffff:ffff::", "services": []any{dns}, "routes": []any{}},
		},
		"services": []any{dns},
	}
	if !reflect.DeepEqual(nd, want) {
		t.Errorf("network_data.json = %v\nwant %v", nd, want)
	}
}

func TestEC2Layout(t *testing.T) {
	tree := render(t, sample())
	for path, want := range map[string]string{
		"/latest/meta-data/instance-id":                 "i-0c5a8a7e",
		"/latest/meta-data/hostname":                    "web1",
		"/latest/meta-data/local-ipv4":                  "10.1.0.5",
		"/latest/meta-data/public-keys/":                "0=k1",
		"/latest/meta-data/public-keys/0/openssh-key":   pubKey,
		"/latest/meta-data/placement/availability-zone": "nova",
		"/2009-04-04/meta-data/ami-launch-index":        "2",
	} {
		if code, body := get(t, tree, path); code != 200 || body != want {
			t.Errorf("GET %s = %d %q, want %q", path, code, body, want)
		}
	}
	_, list := get(t, tree, "/latest/meta-data/")
	for _, e := range []string{"instance-id", "hostname", "local-ipv4", "public-keys/", "placement/"} {
		if !strings.Contains("\n"+list+"\n", "\n"+e+"\n") {
			t.Errorf("meta-data/ listing lacks %s: %q", e, list)
		}
	}
}

func TestListingsAndVersions(t *testing.T) {
	tree := render(t, sample())
	_, os := get(t, tree, "/openstack/")
	if !strings.Contains(os, "2018-08-27\n") || !strings.HasSuffix(os, "latest") {
		t.Errorf("/openstack/ = %q", os)
	}
	_, latest := get(t, tree, "/openstack/latest")
	want := "meta_data.json\nnetwork_data.json\npassword\nuser_data\nvendor_data.json\nvendor_data2.json"
	if latest != want {
		t.Errorf("/openstack/latest = %q, want %q", latest, want)
	}
	if code, body := get(t, tree, "/openstack/latest/vendor_data2.json"); code != 200 || body != "{}" {
		t.Errorf("vendor_data2.json = %d %q", code, body)
	}
	if code, body := get(t, tree, "/openstack/latest/password"); code != 200 || body != "" {
		t.Errorf("password = %d %q", code, body)
	}
	if code, _ := get(t, tree, "/openstack/latest/nothing"); code != 404 {
		t.Errorf("unknown file = %d", code)
	}
	rec := httptest.NewRecorder()
	metadata.Serve(rec, httptest.NewRequest(http.MethodPost, "/openstack/latest/password", strings.NewReader("x")), tree)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST = %d", rec.Code)
	}
}

func TestConfigDriveHasOnlyOpenStackTree(t *testing.T) {
	cd := render(t, sample()).ConfigDrive()
	if _, ok := cd["openstack/latest/meta_data.json"]; !ok {
		t.Error("config drive lacks openstack/latest/meta_data.json")
	}
	for k := range cd {
		if !strings.HasPrefix(k, "openstack/") {
			t.Errorf("config drive has %s", k)
		}
	}
}
