package cluster

// Suspicion: owners that failed to answer are bypassed until they prove
// alive.

import "time"

func (c *Coordinator) suspect(node string) {
	c.susMu.Lock()
	if _, ok := c.sus[node]; !ok {
		c.nsus.Add(1)
	}
	c.sus[node] = time.Now()
	c.susMu.Unlock()
}

func (c *Coordinator) unsuspect(node string) {
	c.susMu.Lock()
	if _, ok := c.sus[node]; ok {
		delete(c.sus, node)
		c.nsus.Add(-1)
	}
	c.susMu.Unlock()
}

// suspected reports whether forwarding to node failed since its last
// heartbeat: checks it owns then go straight to the failure policy instead
// of waiting for the deadline again, until it proves alive or is dropped.
func (c *Coordinator) suspected(node string) bool {
	if c.nsus.Load() == 0 {
		return false
	}
	c.susMu.Lock()
	at, ok := c.sus[node]
	c.susMu.Unlock()
	if !ok {
		return false
	}
	if seen, live := c.mem.LastSeen(node); live && seen.After(at) {
		c.unsuspect(node)
		return false
	}
	return true
}
