package cluster

// The Coordinator's counters.

import "github.com/fluxlimiter/flux/bus"

// LimiterStats are one limiter's counters.
type LimiterStats struct {
	Mode Mode
	// Answers counts decisions by Path: Answers[PathLocal] and so on.
	Answers [numPaths]uint64
	// Published counts the aggregated updates this node published.
	Published uint64
	// PublishErrors counts batches that could not be published.
	PublishErrors uint64
	// Applied counts the updates from peers applied to the limiter.
	Applied uint64
	// Served counts the checks this node decided as the owner for peers
	// (the peers count them in their Answers[PathOwner]).
	Served uint64
}

// Stats are a Coordinator's counters.
type Stats struct {
	// Members is the number of live members this node counts, itself
	// included: the gauge flux_cluster_members.
	Members    int
	Limiters   map[string]LimiterStats
	Membership bus.MembershipStats
	Forwarder  bus.ForwarderStats
	Bus        bus.Stats // zero unless the bus has a Stats() bus.Stats method
	// Suspected is the number of owners currently bypassed because a
	// forwarded check failed since their last heartbeat.
	Suspected int
	// CaughtUp counts the key states restored from peers at Start.
	CaughtUp uint64
	// UpdatesDropped counts received updates that could not be applied:
	// unknown or local limiter, the catch-up backlog full, or rejected by
	// the limiter.
	UpdatesDropped uint64
	// UpdatesRefused counts received updates refused because their
	// admission time was more than Config.MaxClockSkew ahead of this
	// node's clock.
	UpdatesRefused uint64
	// UpdatesClamped counts received updates whose cost was above what
	// one node can admit of a key between two publications (the
	// capacity, plus the rate over the sync interval and a second) and
	// was applied as that bound.
	UpdatesClamped uint64
}

// Stats returns the Coordinator's counters.
func (c *Coordinator) Stats() Stats {
	st := Stats{
		Members:        c.Members(),
		Limiters:       make(map[string]LimiterStats),
		Membership:     c.mem.Stats(),
		Forwarder:      c.fwd.Stats(),
		CaughtUp:       c.caughtUp.Load(),
		UpdatesDropped: c.dropped.Load(),
		UpdatesRefused: c.refused.Load(),
		UpdatesClamped: c.clamped.Load(),
		Suspected:      int(c.nsus.Load()),
	}
	if s, ok := c.bus.(interface{ Stats() bus.Stats }); ok {
		st.Bus = s.Stats()
	}
	for name, e := range *c.entries.Load() {
		ls := LimiterStats{Mode: e.cfg.Mode, Applied: e.applied.Load(), Served: e.served.Load()}
		for i := range ls.Answers {
			ls.Answers[i] = e.answers[i].Load()
		}
		if e.g != nil {
			ls.Published = e.g.published.Load()
			ls.PublishErrors = e.g.publishErrs.Load()
		}
		st.Limiters[name] = ls
	}
	return st
}
