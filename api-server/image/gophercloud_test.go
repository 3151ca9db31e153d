package image_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// TestGophercloudClient proves a real client works end to end: password
// authentication, catalog lookup, Glance version discovery at the
// unversioned endpoint, image listing with paging, and show.
func TestGophercloudClient(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	pub := e.register("busybox", e.adminPID, "public", nil)
	for _, n := range []string{"a", "b", "c"} {
		e.register("demo-"+n, e.demoPID, "private", nil)
	}

	for _, authURL := range []string{e.idSrv.URL + "/v3", e.idSrv.URL} { // the latter makes gophercloud discover
		provider, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
			IdentityEndpoint: authURL, Username: "alice", Password: "pw-alice", DomainName: "Default",
			Scope: &gophercloud.AuthScope{ProjectName: "demo", DomainID: "default"},
		})
		if err != nil {
			t.Fatalf("authenticate at %s: %v", authURL, err)
		}
		// The token as gophercloud parsed it.
		res := tokens.Get(ctx, mustIdentity(t, provider), provider.Token())
		if res.Err != nil {
			t.Fatalf("token get: %v", res.Err)
		}
		proj, err := res.ExtractProject()
		if err != nil || proj.Name != "demo" {
			t.Fatalf("token project %+v %v", proj, err)
		}
		cat, err := res.ExtractServiceCatalog()
		if err != nil || len(cat.Entries) != 4 {
			t.Fatalf("catalog %+v %v", cat, err)
		}

		client, err := openstack.NewImageV2(provider, gophercloud.EndpointOpts{Region: "RegionOne"})
		if err != nil {
			t.Fatalf("image client: %v", err)
		}
		if client.Endpoint != e.imgSrv.URL+"/" {
			t.Fatalf("image endpoint %q, want %s/", client.Endpoint, e.imgSrv.URL)
		}
		pages := 0
		var got []string
		err = images.List(client, images.ListOpts{Limit: 2}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
			pages++
			imgs, err := images.ExtractImages(p)
			if err != nil {
				return false, err
			}
			for _, i := range imgs {
				got = append(got, i.Name)
			}
			return true, nil
		})
		if err != nil {
			t.Fatalf("list images: %v", err)
		}
		if len(got) != 4 || pages != 2 {
			t.Fatalf("listed %v in %d pages", got, pages)
		}
		img, err := images.Get(ctx, client, pub).Extract()
		if err != nil {
			t.Fatalf("get image: %v", err)
		}
		if img.Name != "busybox" || img.ContainerFormat != "docker" || img.SizeBytes != 1000 || img.CreatedAt.IsZero() {
			t.Fatalf("image %+v", img)
		}
		err = images.Get(ctx, client, "missing").Err
		if !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			t.Fatalf("missing image: %v", err)
		}
	}
}

func mustIdentity(t *testing.T, p *gophercloud.ProviderClient) *gophercloud.ServiceClient {
	t.Helper()
	c, err := openstack.NewIdentityV3(p, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
