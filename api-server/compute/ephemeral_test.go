package compute

import (
	"context"
	"testing"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Ephemeral disks on create, as Nova settles them with the flavor: sizes
// default to the flavor's ephemeral size, together at most it; a flavor
// with one gives a server without mappings one disk of it; swap, a
// bootable blank disk, another format are refused. The server's spec
// mounts them at /mnt/ephemeral<i>, blank, and its host claim counts
// them.
func TestEphemeralDisks(t *testing.T) {
	f := newFixture(t)
	if err := f.st.DB.Create(&store.Flavor{FlavorID: "e2", Name: "eph.2", VCPUs: 1, MemoryMB: 128, RootGB: 1, EphemeralGB: 2, IsPublic: true, RxtxFactor: 1}).Error; err != nil {
		t.Fatal(err)
	}
	create := func(flavor, bdms string) (int, map[string]any) {
		resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"e","imageRef":"`+f.image+`","flavorRef":"`+flavor+`","block_device_mapping_v2":[`+bdms+`]}}`)
		return resp.StatusCode, body
	}
	root := `{"source_type":"image","destination_type":"local","uuid":"` + f.image + `","boot_index":0}`
	blank := `{"source_type":"blank","destination_type":"local","volume_size":1,"boot_index":-1}`
	for name, bdms := range map[string]string{
		"swap":           root + `,{"source_type":"blank","destination_type":"local","guest_format":"swap","volume_size":512,"boot_index":-1}`,
		"too large":      root + `,{"source_type":"blank","destination_type":"local","volume_size":3}`,
		"three of 1 > 2": root + "," + blank + "," + blank + "," + blank,
		"no ephemeral":   blank,
		"xfs":            root + `,{"source_type":"blank","destination_type":"local","volume_size":1,"guest_format":"xfs"}`,
		"bootable blank": `{"source_type":"blank","destination_type":"local","volume_size":1,"boot_index":0}`,
	} {
		flavor := "e2"
		if name == "no ephemeral" {
			flavor = "1"
		}
		code, body := create(flavor, bdms)
		if code != 400 {
			t.Errorf("%s: %d %v, want 400", name, code, body)
		}
	}
	ephsOf := func(body map[string]any) *store.Instance {
		t.Helper()
		var inst store.Instance
		if err := f.st.DB.Where("id = ?", body["server"].(map[string]any)["id"]).First(&inst).Error; err != nil {
			t.Fatal(err)
		}
		return &inst
	}
	// A mapping without a size takes the flavor's (2 GB): with another
	// of 1 GB that is over the flavor's 2 GB.
	if code, body := create("e2", root+","+blank+`,{"source_type":"blank","destination_type":"local","guest_format":"ext4","boot_index":-1}`); code != 400 {
		t.Fatalf("1 GB + the flavor's 2 GB: %d %v, want 400", code, body)
	}
	code, body := create("e2", root+","+blank+`,{"source_type":"blank","destination_type":"local","guest_format":"ext4","volume_size":1}`)
	if code != 202 {
		t.Fatalf("two ephemeral disks: %d %v", code, body)
	}
	inst := ephsOf(body)
	if got := inst.Ephemerals(); len(got) != 2 || got[0].SizeGB != 1 || got[1].SizeGB != 1 || inst.ClaimDiskGB() != 3 {
		t.Fatalf("ephemeral disks %+v (claim %d GB)", got, inst.ClaimDiskGB())
	}
	code, body = create("e2", root)
	if code != 202 {
		t.Fatalf("flavor's ephemeral: %d %v", code, body)
	}
	inst = ephsOf(body)
	if got := inst.Ephemerals(); len(got) != 1 || got[0].SizeGB != 2 || inst.ClaimDiskGB() != 3 {
		t.Fatalf("the flavor's ephemeral disk %+v (claim %d GB)", got, inst.ClaimDiskGB())
	}
	inst.Host = "h1"
	spec, err := instance.SpecFor(context.Background(), f.st, inst)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Volumes) != 1 || spec.Volumes[0].MountPath != "/mnt/ephemeral0" || spec.Volumes[0].Volume.ID != protocol.EphemeralID(inst.ID, 0) ||
		spec.Volumes[0].Volume.SizeGB != 2 || spec.Volumes[0].Create == nil || !spec.Volumes[0].Ephemeral() || spec.Volumes[0].Volume.Host != "h1" {
		t.Fatalf("spec volumes %+v", spec.Volumes)
	}
	// Not in the volume API: no volume rows.
	var n int64
	f.st.DB.Model(&store.Volume{}).Count(&n)
	if n != 0 {
		t.Fatalf("%d volume rows for ephemeral disks", n)
	}
}
