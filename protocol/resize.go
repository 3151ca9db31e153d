package protocol

// Resize message kinds, on compute.<host> queues. The agent answers each
// with an InstanceReport (Action resize or revert_resize) on the
// conductor queue.
const (
	KindResizeInstance = "resize_instance"
	KindRevertResize   = "revert_resize_instance"
	// KindConfirmResize tells the host a same-host resize is confirmed:
	// it drops what it kept for a revert (a root disk resize's old
	// container). No report; the agent's reconcile drops what a lost
	// message leaves.
	KindConfirmResize = "confirm_resize_instance"
)

// ResizeInstance asks an agent to apply a flavor to a running (or
// stopped) instance in place: Spec carries the flavor to apply (vCPUs,
// memory, extra specs), Old the one it had, so a failure half-way can be
// rolled back without a database. A revert sends the same body with Spec
// the old flavor and Old the new one.
type ResizeInstance struct {
	RequestID   string       `json:"request_id"`
	InstanceID  string       `json:"instance_id"`
	MigrationID uint         `json:"migration_id"`
	Spec        InstanceSpec `json:"spec"`
	Old         InstanceSpec `json:"old"`
	// Running says the server ran when the resize (or revert) began
	// (vm_state active, or a revert back to active) and must run after
	// it. An agent that finds its container stopped on this message's
	// delivery died during a cold resize (stopped, not yet started): it
	// applies Spec and starts the server. false (a stopped server, or
	// a message from an older API): the container is left as found.
	Running bool `json:"running,omitempty"`
}
