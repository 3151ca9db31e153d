package instance

import (
	"context"
	"testing"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

const testImageRef = "127.0.0.1:5050/capsule/busybox:latest"

func openSQLite(t *testing.T) *store.Store { return storetest.SQLite(t) }

// newInstance stores a building instance id (1 vCPU, 512 MB, 5 GB) with
// its own image, adjusted by mod.
func newInstance(t *testing.T, st *store.Store, id string, mod ...func(*store.Instance)) *store.Instance {
	t.Helper()
	img := store.Image{ID: "img-" + id, Name: "busybox", Status: "active", RegistryRef: testImageRef}
	if err := st.DB.Create(&img).Error; err != nil {
		t.Fatal(err)
	}
	inst := store.Instance{ID: id, Name: "vm-" + id, Hostname: "vm-" + id, ProjectID: "p1", UserID: "u1",
		ImageID: img.ID, VCPUs: 1, MemoryMB: 512, RootGB: 5, ExtraSpecs: `{"hw:cpu_policy":"shared"}`,
		Metadata: `{"role":"web"}`, VMState: lifecycle.Building, TaskState: lifecycle.Scheduling, BuildAttempts: 1}
	for _, m := range mod {
		m(&inst)
	}
	if err := st.DB.Create(&inst).Error; err != nil {
		t.Fatal(err)
	}
	return &inst
}

func TestSpecFor(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	inst := newInstance(t, st, "i1", func(i *store.Instance) { i.Metadata, i.ExtraSpecs = "", "{}" })
	sp, err := SpecFor(ctx, st, inst)
	if err != nil {
		t.Fatal(err)
	}
	if sp.ImageRef != testImageRef || sp.Metadata != nil || sp.ExtraSpecs != nil || sp.DiskGB != 5 {
		t.Errorf("spec = %+v", sp)
	}
	// A deleted image must not break reconciliation of a running server.
	st.DB.Where("id = ?", "img-i1").Delete(&store.Image{})
	sp, err = SpecFor(ctx, st, inst)
	if err != nil || sp.ImageRef != "" || sp.ID != "i1" {
		t.Errorf("spec without image = %+v, %v", sp, err)
	}
	inst.Metadata = "not json"
	if _, err := SpecFor(ctx, st, inst); err == nil {
		t.Error("bad metadata JSON accepted")
	}
}

// TestSpecForNICs: the spec carries the server's ports as NICs, with the
// subnet's gateway and prefix, the network's VLAN, and the flavor's
// quota:vif_* shaping on each.
func TestSpecForNICs(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	inst := newInstance(t, st, "i1", func(i *store.Instance) {
		i.ExtraSpecs = `{"quota:vif_inbound_average":"1250","quota:vif_outbound_average":"625"}`
	})
	n := &store.Network{Name: "n", ProjectID: "p", AdminStateUp: true, MTU: 1500, PortSecurityEnabled: true,
		NetworkType: store.NetworkTypeVLAN, PhysicalNetwork: "physnet1", SegmentationID: 101}
	if err := st.CreateNetwork(ctx, n, store.VLANRange{}); err != nil {
		t.Fatal(err)
	}
	sn := &store.Subnet{NetworkID: n.ID, ProjectID: "p", IPVersion: 4, CIDR: "10.5.0.0/24"}
	if err := store.ValidateSubnet(sn, true, nil, []string{"10.5.0.53"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateSubnet(ctx, sn); err != nil {
		t.Fatal(err)
	}
	p, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, ProjectID: "p1", DeviceID: "i1", DeviceOwner: "compute:nova",
		ComputeBound: true, FixedIPs: []store.FixedIPRequest{{IP: "10.5.0.7"}}})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := SpecFor(ctx, st, inst)
	if err != nil {
		t.Fatal(err)
	}
	if len(sp.NICs) != 1 {
		t.Fatalf("NICs = %+v", sp.NICs)
	}
	nic := sp.NICs[0]
	if nic.PortID != p.ID || nic.MAC != p.MACAddress || nic.SegmentationID != 101 || nic.PhysicalNetwork != "physnet1" ||
		nic.Gateway != "10.5.0.1" || len(nic.IPs) != 1 || nic.IPs[0].Address != "10.5.0.7" || nic.IPs[0].PrefixLen != 24 ||
		!nic.PortSecurity || len(nic.DNS) != 1 {
		t.Errorf("NIC = %+v", nic)
	}
	if nic.Bandwidth == nil || nic.Bandwidth.InboundAverageKBps != 1250 || nic.Bandwidth.OutboundAverageKBps != 625 {
		t.Errorf("bandwidth = %+v", nic.Bandwidth)
	}
}

// TestSpecForAuthorizedKeys: the spec carries the key copied at boot; an
// x509 keypair's certificate is not an ssh key and is not sent.
func TestSpecForAuthorizedKeys(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISchedulerKey user@host"
	for _, c := range []struct{ id, keyData, want string }{
		{"i-ssh", key + "\n", key},
		{"i-none", "", ""},
		{"i-x509", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", ""},
	} {
		inst := newInstance(t, st, c.id, func(i *store.Instance) { i.KeyData = c.keyData })
		sp, err := SpecFor(ctx, st, inst)
		if err != nil {
			t.Fatal(err)
		}
		if sp.AuthorizedKeys != c.want {
			t.Errorf("%s: AuthorizedKeys = %q, want %q", c.id, sp.AuthorizedKeys, c.want)
		}
	}
}

// TestSpecForNICsOnlyTheComputeAPIsPorts is the device_id hijack: ports
// that name a server in device_id without the Compute API having bound
// them (another project's, created before the server's own so it would be
// its first NIC and default route; or its own project's label), are none
// of its NICs, and placement binds none of them to the server's host.
func TestSpecForNICsOnlyTheComputeAPIsPorts(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	inst := newInstance(t, st, "victim")
	n := &store.Network{Name: "shared", ProjectID: "admin", Shared: true, AdminStateUp: true, MTU: 1500,
		PortSecurityEnabled: true, NetworkType: store.NetworkTypeVLAN, PhysicalNetwork: "physnet1", SegmentationID: 102}
	if err := st.CreateNetwork(ctx, n, store.VLANRange{}); err != nil {
		t.Fatal(err)
	}
	sn := &store.Subnet{NetworkID: n.ID, ProjectID: "admin", IPVersion: 4, CIDR: "10.6.0.0/24"}
	if err := store.ValidateSubnet(sn, true, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateSubnet(ctx, sn); err != nil {
		t.Fatal(err)
	}
	alloc := func(req store.PortRequest) *store.Port {
		t.Helper()
		req.NetworkID = n.ID
		p, err := st.AllocatePort(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Even flagged as bound, another project's port is not the server's.
	alloc(store.PortRequest{ProjectID: "attacker", DeviceID: "victim", DeviceOwner: "compute:nova", ComputeBound: true})
	alloc(store.PortRequest{ProjectID: "attacker", DeviceID: "victim", DeviceOwner: "compute:nova"})
	alloc(store.PortRequest{ProjectID: "p1", DeviceID: "victim", DeviceOwner: "compute:nova"})
	own := alloc(store.PortRequest{ProjectID: "p1", DeviceID: "victim", DeviceOwner: "compute:nova", ComputeBound: true})

	sp, err := SpecFor(ctx, st, inst)
	if err != nil {
		t.Fatal(err)
	}
	if len(sp.NICs) != 1 || sp.NICs[0].PortID != own.ID {
		t.Fatalf("NICs = %+v, want only port %s", sp.NICs, own.ID)
	}
	if err := BindPorts(st.DB, "victim", "h1"); err != nil {
		t.Fatal(err)
	}
	ports, err := st.ListPorts(ctx, store.PortFilter{DeviceID: "victim"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if bound := p.BindingHostID == "h1"; bound != (p.ID == own.ID) {
			t.Errorf("port %s (project %s, compute-bound %v) bound to %q", p.ID, p.ProjectID, p.ComputeBound, p.BindingHostID)
		}
	}
}
