package ovs

// FlowQueue reports, for tests, whether an ApplyFlows run for bridge is
// under way and how many batches wait for the next one.
func FlowQueue(c *Client, bridge string) (running bool, queued int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.flowQueues[bridge]
	if q == nil {
		return false, 0
	}
	return true, len(q.pending)
}
