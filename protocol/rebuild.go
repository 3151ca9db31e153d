package protocol

// KindRebuildInstance, on compute.<host> queues, asks an agent to rebuild
// an instance. The agent answers with an InstanceReport (Action rebuild)
// on the conductor queue.
const KindRebuildInstance = "rebuild_instance"

// RebuildInstance replaces an instance's workload with one made from
// Spec (its new image, name, metadata and authorized keys; same flavor
// and NICs), wiping its disk. Start says whether the new workload is
// started: a SHUTOFF server stays off, an ACTIVE or ERROR one runs.
type RebuildInstance struct {
	RequestID string       `json:"request_id"`
	Spec      InstanceSpec `json:"spec"`
	Start     bool         `json:"start"`
}
