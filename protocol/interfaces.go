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
)

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
