package protocol

import "time"

// Interface hot-plug (Nova's os-interface attach and detach): the API asks
// the agent of the server's host (compute.<host> queue) to plug or unplug
// one NIC of a server, and waits for the answer, so the API call fails
// (and the API rolls the port back) when the NIC could not be plugged.
const (
	// KindAttachInterface is request/reply: AttachInterface in,
	// InterfaceReply out.
	KindAttachInterface = "attach_interface"
	// KindDetachInterface is request/reply: DetachInterface in,
	// InterfaceReply out.
	KindDetachInterface = "detach_interface"
	// KindRefreshFirewall is one-way: RefreshFirewall in, no answer.
	KindRefreshFirewall = "refresh_firewall"
)

// RefreshFirewall gives the agent a NIC's current filter after its
// remote groups' members changed (a server built, deleted, an interface
// attached or detached in a group its rules name). The agent replaces
// only the port's flows (anti-spoofing and security group rules, one
// bundle) when the rest of the NIC is the one plugged and the server
// runs; otherwise it does nothing (a stopped server gets its filter at
// its next start, a NIC that differs from the plugged one from drift
// repair, which recomputes every running server's flows). Applying it
// twice changes nothing; the API sends at most one per port per
// coalescing window, and none to a server still building.
type RefreshFirewall struct {
	RequestID  string `json:"request_id"`
	InstanceID string `json:"instance_id"`
	// NIC is the port's NIC as the control plane describes it now,
	// Firewall included.
	NIC NIC `json:"nic"`
	// ComputedAt is when NIC was read from the database: an agent
	// ignores a refresh older than the last one it applied to the port
	// (two may be handled concurrently).
	ComputedAt time.Time `json:"computed_at,omitzero"`
}

// AttachInterface asks for NIC to be added to a server: plugged at once
// into a running (or paused) server, only remembered for a stopped one
// (plugged at its next start, with its other NICs).
type AttachInterface struct {
	RequestID  string `json:"request_id"`
	InstanceID string `json:"instance_id"`
	NIC        NIC    `json:"nic"`
	// Deadline is when the API stops waiting: past it the agent gives
	// up (undoing what it did), as the API rolls the port back.
	Deadline time.Time `json:"deadline,omitzero"`
}

// DetachInterface asks for the NIC of port PortID to be removed from a
// server. NIC describes it as the control plane knows it, so an agent that
// has forgotten the server's NICs (restarted) can still unplug it.
type DetachInterface struct {
	RequestID  string `json:"request_id"`
	InstanceID string `json:"instance_id"`
	PortID     string `json:"port_id"`
	NIC        NIC    `json:"nic"`
	// Deadline: as AttachInterface's.
	Deadline time.Time `json:"deadline,omitzero"`
}

// InterfaceReply is the agent's answer once the NIC is plugged (or
// unplugged): Live says whether the running server's network changed now
// (false: the server is stopped and the change applies at its next start).
type InterfaceReply struct {
	Live bool `json:"live"`
}
