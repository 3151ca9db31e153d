package agent

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/ovs/ovstest"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/vif"
)

// The vif adapter prunes, on a real Open vSwitch, exactly the ports of the
// instance that are not among its NICs.
func TestVIFRemoveStaleNICs(t *testing.T) {
	c := ovstest.Client(t)
	br := ovstest.Bridge(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := VIF(vif.New(c, map[string]string{"physnet-t": br}, testLogger(t)))
	pr, ok := p.(NICPruner)
	if !ok {
		t.Fatal("the vif adapter does not prune NICs")
	}

	ns := "capsule-t-" + uuid.NewString()[:8]
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	sn := randSubnet(t)
	nic := func(last, vlan int) protocol.NIC {
		return protocol.NIC{PortID: uuid.NewString(), NetworkID: "net-t", MAC: randMAC(t), MTU: 1450,
			IPs:             []protocol.IP{{Address: fmt.Sprintf("%s%d", sn, last), PrefixLen: 24}},
			PhysicalNetwork: "physnet-t", NetworkType: "vlan", SegmentationID: vlan, PortSecurity: true}
	}
	nics := []protocol.NIC{nic(5, 201), nic(6, 202)}
	id := "prune-" + uuid.NewString()
	t.Cleanup(func() { _ = p.UnplugInstance(context.Background(), id) })
	if err := p.Plug(ctx, id, "/var/run/netns/"+ns, nics); err != nil {
		t.Fatal(err)
	}

	gone, err := pr.RemoveStaleNICs(ctx, id, nics[:1])
	if err != nil || !slices.Equal(gone, []string{nics[1].PortID}) {
		t.Fatalf("RemoveStaleNICs = %v, %v; want [%s]", gone, err, nics[1].PortID)
	}
	ports, err := c.ListPorts(ctx, br)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, port := range ports {
		if port.VMUUID() == id {
			left = append(left, port.IfaceID())
		}
	}
	if !slices.Equal(left, []string{nics[0].PortID}) {
		t.Errorf("ports of the instance left = %v, want [%s]", left, nics[0].PortID)
	}
	if gone, err := pr.RemoveStaleNICs(ctx, id, nics[:1]); err != nil || len(gone) != 0 {
		t.Errorf("second RemoveStaleNICs = %v, %v; want nothing", gone, err)
	}
}
