package vif

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// assignNames picks the namespace end's name of each NIC. A NIC whose
// veth is already plugged into this namespace keeps the name it has, so
// plugging a server again after an interface was attached or detached
// (hot-plug, drift repair) never renames or re-creates a working eth<i>;
// every other NIC gets the lowest eth<i> no kept NIC uses, in list order.
// In a fresh namespace (boot, start) that is eth0, eth1, ... in the order
// of nics, as before hot-plug existed; after a detach and a stop/start the
// remaining NICs are numbered from eth0 again.
func assignNames(nsh, host *netlink.Handle, plans []nicPlan) error {
	used := map[string]bool{}
	kept := make([]bool, len(plans))
	for i := range plans {
		name, err := pluggedName(nsh, host, plans[i].host)
		if err != nil {
			return fmt.Errorf("port %s: %w", plans[i].nic.PortID, err)
		}
		if name != "" && !used[name] {
			plans[i].cont, kept[i], used[name] = name, true, true
		}
	}
	next := 0
	for i := range plans {
		if kept[i] {
			continue
		}
		for used[ContainerIfName(next)] {
			next++
		}
		plans[i].cont = ContainerIfName(next)
		used[plans[i].cont] = true
	}
	return nil
}

// pluggedName is the name of the namespace end of host interface hostIf,
// or "" when hostIf is missing or not a veth paired into this namespace.
func pluggedName(nsh, host *netlink.Handle, hostIf string) (string, error) {
	hl, err := linkByName(host, hostIf)
	if err != nil || hl == nil || hl.Type() != "veth" {
		if err != nil {
			return "", fmt.Errorf("look up %s: %w", hostIf, err)
		}
		return "", nil
	}
	cl, err := nsh.LinkByIndex(hl.Attrs().ParentIndex)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up the peer of %s in the namespace: %w", hostIf, err)
	}
	if !paired(hl, cl) {
		return "", nil
	}
	return cl.Attrs().Name, nil
}

// PluggedName is the name, in the namespace nsh looks at, of the NIC of
// port portID ("" when it is not plugged there). Once NICs were
// hot-plugged, names follow plug order rather than port order, so readers
// of a NIC's counters look it up by its veth instead of guessing eth<i>.
func PluggedName(nsh *netlink.Handle, portID string) (string, error) {
	host, err := netlink.NewHandle()
	if err != nil {
		return "", fmt.Errorf("netlink handle: %w", err)
	}
	defer host.Close()
	return pluggedName(nsh, host, HostIfName(portID))
}
