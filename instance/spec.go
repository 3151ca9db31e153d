package instance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/capsule-cloud/capsule/limits"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// SpecFor builds what an agent needs to build inst: the instance's own
// flavor copy, its hostname and metadata, and the registry reference of
// its image. An image deleted since the instance was created leaves
// ImageRef empty rather than failing, so reconciliation of the instances
// already running keeps working; a new build must check ImageRef itself.
func SpecFor(ctx context.Context, st *store.Store, inst *store.Instance) (protocol.InstanceSpec, error) {
	spec := protocol.InstanceSpec{
		ID: inst.ID, Name: inst.Name, Hostname: inst.Hostname, ProjectID: inst.ProjectID,
		VCPUs: inst.VCPUs, MemoryMB: inst.MemoryMB, DiskGB: inst.RootGB,
		AuthorizedKeys: authorizedKeys(inst.KeyData),
		UserData:       inst.UserData, ConfigDrive: inst.ConfigDrive, AdminPassHash: inst.AdminPassHash,
	}
	var err error
	if spec.ExtraSpecs, err = stringMap(inst.ExtraSpecs); err != nil {
		return spec, fmt.Errorf("spec of %s: extra specs: %w", inst.ID, err)
	}
	if spec.Metadata, err = stringMap(inst.Metadata); err != nil {
		return spec, fmt.Errorf("spec of %s: metadata: %w", inst.ID, err)
	}
	if spec.NICs, err = nicsFor(ctx, st, inst); err != nil {
		return spec, fmt.Errorf("spec of %s: %w", inst.ID, err)
	}
	// Every NIC is shaped as the flavor's quota:vif_* say (as libvirt
	// applies them to each interface). Specs were validated when set; a
	// flavor stored before validation existed is shaped as far as it parses.
	if l, err := limits.Parse(spec.ExtraSpecs, inst.VCPUs); err == nil && l.VIF.Limited() {
		bw := bandwidthOf(l.VIF)
		for i := range spec.NICs {
			b := bw
			spec.NICs[i].Bandwidth = &b
		}
	}
	if spec.Volumes, err = volumesFor(st.WithContext(ctx), inst); err != nil {
		return spec, fmt.Errorf("spec of %s: %w", inst.ID, err)
	}
	imageID := inst.ImageID
	if imageID == "" {
		// Volume-backed: the workload's config is the image its boot
		// volume was filled from.
		if imageID, err = BootImage(st.WithContext(ctx), inst.ID); err != nil {
			return spec, fmt.Errorf("spec of %s: %w", inst.ID, err)
		}
	}
	if imageID == "" {
		return spec, nil
	}
	var img store.Image
	err = st.WithContext(ctx).Where("id = ?", imageID).First(&img).Error
	if err = store.NotFound(err, "image "+imageID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return spec, nil
		}
		return spec, fmt.Errorf("spec of %s: %w", inst.ID, err)
	}
	spec.ImageRef = img.RegistryRef
	return spec, nil
}

// nicsFor describes the server's ports (its NICs, in port creation order:
// the ports of its project the Compute API bound to it, store.ServerPorts)
// with what the agent needs to plumb them: addresses with their prefix,
// gateway and DNS of the subnet, and the network's segment.
func nicsFor(ctx context.Context, st *store.Store, inst *store.Instance) ([]protocol.NIC, error) {
	ports, err := st.ServerPorts(ctx, inst.ID, inst.ProjectID)
	if err != nil {
		return nil, err
	}
	var nics []protocol.NIC
	nets := map[string]*store.Network{}
	subnets := map[string]*store.Subnet{}
	for _, p := range ports {
		n, ok := nets[p.NetworkID]
		if !ok {
			if n, err = st.GetNetwork(ctx, p.NetworkID); err != nil {
				return nil, fmt.Errorf("network of port %s: %w", p.ID, err)
			}
			nets[p.NetworkID] = n
		}
		nic := protocol.NIC{PortID: p.ID, NetworkID: p.NetworkID, MAC: p.MACAddress, MTU: n.MTU,
			PhysicalNetwork: n.PhysicalNetwork, NetworkType: n.NetworkType, SegmentationID: n.SegmentationID,
			PortSecurity: p.PortSecurityEnabled}
		for _, ap := range p.AddressPairs() {
			nic.AllowedAddressPairs = append(nic.AllowedAddressPairs, protocol.AddressPair{IP: ap.IPAddress, MAC: ap.MACAddress})
		}
		if nic.Firewall, err = firewallFor(ctx, st, &p); err != nil {
			return nil, fmt.Errorf("firewall of port %s: %w", p.ID, err)
		}
		for _, a := range p.FixedIPs {
			sn, ok := subnets[a.SubnetID]
			if !ok {
				if sn, err = st.GetSubnet(ctx, a.SubnetID); err != nil {
					return nil, fmt.Errorf("subnet of port %s: %w", p.ID, err)
				}
				subnets[a.SubnetID] = sn
			}
			nic.IPs = append(nic.IPs, protocol.IP{Address: a.IPAddress, PrefixLen: sn.Prefix().Bits(), SubnetID: sn.ID})
			if nic.Gateway == "" && sn.GatewayIP != nil {
				nic.Gateway = *sn.GatewayIP
			}
			nic.DNS = append(nic.DNS, sn.DNS()...)
		}
		nics = append(nics, nic)
	}
	return nics, nil
}

func bandwidthOf(v limits.VIF) protocol.Bandwidth {
	return protocol.Bandwidth{
		InboundAverageKBps: int(v.Inbound.AverageKBps), InboundPeakKBps: int(v.Inbound.PeakKBps), InboundBurstKB: int(v.Inbound.BurstKB),
		OutboundAverageKBps: int(v.Outbound.AverageKBps), OutboundPeakKBps: int(v.Outbound.PeakKBps), OutboundBurstKB: int(v.Outbound.BurstKB),
	}
}

// stringMap decodes a JSON object column; "" and "null" are empty.
func stringMap(s string) (map[string]string, error) {
	if s == "" || s == "null" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// authorizedKeys is what the server's authorized_keys gets from the key
// copied at boot: an OpenSSH key line. An x509 keypair's certificate is
// for WinRM, not ssh, and is not written.
func authorizedKeys(keyData string) string {
	k := strings.TrimSpace(keyData)
	if strings.HasPrefix(k, "-----BEGIN") {
		return ""
	}
	return k
}
