package ctlbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/compute"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// ListOptions sizes a server-list run.
type ListOptions struct {
	Servers  int    // servers in the database (one project)
	Limit    int    // page size asked for (Nova's maximum is 1000)
	Requests int    // timed requests (first page, then walking the pages round and round)
	Path     string // collection, "/v2.1/servers/detail" by default
	Admin    bool   // as an admin with all_tenants=1 (adds host_status) instead of the project's member
	Images   int    // for ListImages: images in the database
}

// ListResult is what a list run measured.
type ListResult struct {
	Servers, Limit, Requests int // Servers: the items in the database (images for ListImages)
	Pages                    int // pages a walk over every server took
	P50, P99, Max            time.Duration
}

const benchProject = "p-bench"

// benchValidator hands out the two credentials of the run.
type benchValidator struct{}

func (benchValidator) Validate(_ context.Context, tok string) (*auth.Credentials, error) {
	switch tok {
	case "member":
		return &auth.Credentials{UserID: "u-bench", ProjectID: benchProject, Roles: []string{"member", "reader"}}, nil
	case "admin":
		return &auth.Credentials{UserID: "u-admin", ProjectID: "p-admin", Roles: []string{"admin", "member", "reader"},
			IsAdminProject: true}, nil
	}
	return nil, errors.New("invalid token")
}

// SeedServers adds n ACTIVE servers of one project spread over 50 hosts,
// each with a port and an address on the project's network, metadata and
// tags; every 100th is in ERROR with a fault.
func SeedServers(ctx context.Context, st *store.Store, n int) error {
	db := st.WithContext(ctx)
	now := time.Now().UTC()
	if err := SeedHosts(ctx, st, 50); err != nil {
		return err
	}
	netID, subID := uuid.NewString(), uuid.NewString()
	gw := "10.0.0.1"
	if err := db.Create(&store.Network{ID: netID, Name: "bench-net", ProjectID: benchProject, AdminStateUp: true,
		Status: "ACTIVE", MTU: 1500, NetworkType: "vlan", PhysicalNetwork: "physnet1", SegmentationID: 3001}).Error; err != nil {
		return fmt.Errorf("bench: network: %w", err)
	}
	if err := db.Create(&store.Subnet{ID: subID, NetworkID: netID, ProjectID: benchProject, Name: "bench-subnet",
		IPVersion: 4, CIDR: "10.0.0.0/12", GatewayIP: &gw, AllocationPools: "[]", DNSNameservers: "[]",
		HostRoutes: "[]"}).Error; err != nil {
		return fmt.Errorf("bench: subnet: %w", err)
	}
	addr := netip.MustParseAddr("10.0.0.10")
	const batch = 500
	for start := 0; start < n; start += batch {
		var insts []store.Instance
		var ports []store.Port
		var ips []store.IPAllocation
		for i := start; i < min(start+batch, n); i++ {
			id := uuid.NewString()
			at := now.Add(time.Duration(i-n) * time.Second)
			vm := lifecycle.Active
			if i%100 == 99 {
				vm = lifecycle.Error
			}
			inst := store.Instance{ID: id, Name: fmt.Sprintf("bench-%05d", i), ProjectID: benchProject, UserID: "u-bench",
				ImageID: uuid.NewString(), FlavorID: "1", FlavorName: "m1.small", VCPUs: 1, MemoryMB: 512, RootGB: 5,
				ExtraSpecs: "{}", Host: fmt.Sprintf("sim-%05d", i%50), AvailabilityZone: "nova", VMState: vm,
				PowerState: 1, Metadata: `{"role":"bench","index":"` + fmt.Sprint(i) + `"}`, Tags: `["bench","web"]`,
				Hostname: fmt.Sprintf("bench-%05d", i), LaunchedAt: &at, CreatedAt: at, UpdatedAt: at}
			if i%100 == 99 {
				inst.FaultCode, inst.FaultMessage, inst.FaultAt = 500, "No valid host was found. ", &at
			}
			insts = append(insts, inst)
			portID := uuid.NewString()
			ports = append(ports, store.Port{ID: portID, NetworkID: netID, ProjectID: benchProject,
				MACAddress: fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff), DeviceID: id,
				DeviceOwner: "compute:nova", Status: "ACTIVE", AdminStateUp: true, ComputeBound: true, CreatedAt: at, UpdatedAt: at})
			ips = append(ips, store.IPAllocation{SubnetID: subID, IPAddress: addr.String(), PortID: portID, NetworkID: netID})
			addr = addr.Next()
		}
		if err := db.CreateInBatches(insts, 250).Error; err != nil {
			return fmt.Errorf("bench: seed servers: %w", err)
		}
		if err := db.Omit("FixedIPs", "Network").CreateInBatches(ports, 250).Error; err != nil {
			return fmt.Errorf("bench: seed ports: %w", err)
		}
		if err := db.CreateInBatches(ips, 250).Error; err != nil {
			return fmt.Errorf("bench: seed addresses: %w", err)
		}
	}
	return nil
}

// List seeds o.Servers servers on st (a scratch store) and times GET
// o.Path?limit=o.Limit through the Compute API's real handlers over HTTP:
// first a walk over every page (checking each server comes exactly once),
// then o.Requests requests walking the pages again.
func List(ctx context.Context, st *store.Store, o ListOptions) (ListResult, error) {
	if o.Path == "" {
		o.Path = "/v2.1/servers/detail"
	}
	res := ListResult{Servers: o.Servers, Limit: o.Limit, Requests: o.Requests}
	if err := SeedServers(ctx, st, o.Servers); err != nil {
		return res, err
	}
	svc := compute.New(st, bus.NewMem(), compute.Options{PublicHost: "127.0.0.1", ComputePort: 8774,
		Validator: benchValidator{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()
	token, extra := "member", ""
	if o.Admin {
		token, extra = "admin", "&all_tenants=1"
	}
	page := func(marker string) ([]string, string, time.Duration, error) {
		url := fmt.Sprintf("%s%s?limit=%d%s", srv.URL, o.Path, o.Limit, extra)
		if marker != "" {
			url += "&marker=" + marker
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, "", 0, err
		}
		req.Header.Set("X-Auth-Token", token)
		req.Header.Set("X-OpenStack-Nova-API-Version", "latest")
		t0 := time.Now()
		resp, err := srv.Client().Do(req)
		if err != nil {
			return nil, "", 0, err
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		took := time.Since(t0) // the server's answer, not this client's decoding
		var body struct {
			Servers []struct {
				ID string `json:"id"`
			} `json:"servers"`
			Links []struct {
				Rel string `json:"rel"`
			} `json:"servers_links"`
		}
		if err == nil {
			err = json.Unmarshal(raw, &body)
		}
		if resp.StatusCode != http.StatusOK || err != nil {
			return nil, "", 0, fmt.Errorf("bench: GET %s: status %d, decode %v", url, resp.StatusCode, err)
		}
		ids := make([]string, len(body.Servers))
		for i, s := range body.Servers {
			ids[i] = s.ID
		}
		next := ""
		if len(body.Links) > 0 && len(ids) > 0 {
			next = ids[len(ids)-1] // the next link's marker
		}
		return ids, next, took, nil
	}
	return walkAndTime(res, o.Servers, o.Requests, "server", page)
}

// walkAndTime walks a list's pages once (each of the n items exactly
// once), then times requests pages, walking them again round and round.
func walkAndTime(res ListResult, n, requests int, what string,
	page func(marker string) (ids []string, next string, took time.Duration, err error)) (ListResult, error) {
	seen := map[string]bool{}
	var markers []string
	for marker := ""; ; {
		markers = append(markers, marker)
		ids, next, _, err := page(marker)
		if err != nil {
			return res, err
		}
		for _, id := range ids {
			if seen[id] {
				return res, fmt.Errorf("bench: %s %s listed twice", what, id)
			}
			seen[id] = true
		}
		res.Pages++
		if next == "" {
			break
		}
		marker = next
	}
	if len(seen) != n {
		return res, fmt.Errorf("bench: the pages listed %d %ss, want %d", len(seen), what, n)
	}
	lat := make([]time.Duration, 0, requests)
	for i := 0; i < requests; i++ {
		_, _, took, err := page(markers[i%len(markers)])
		if err != nil {
			return res, err
		}
		lat = append(lat, took)
	}
	res.P50, res.P99, res.Max = percentile(lat, .5), percentile(lat, .99), percentile(lat, 1)
	return res, nil
}
