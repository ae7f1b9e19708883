package metrics

import (
	"maps"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxlimiter/flux/cluster"
)

// ClusterStats returns the statistics of the running cluster Coordinator,
// or false when there is none (the node is not clustered, or has left).
type ClusterStats func() (cluster.Stats, bool)

// ClusterCollector exports a cluster Coordinator's counters at scrape time:
// Sync copies those the Metrics has series for (flux_cluster_members,
// flux_cluster_config_mismatches_total, flux_gossip_updates_total), and as
// a prometheus.Collector it exports the others (membership events,
// suspected owners, owner answers served, forward failures, drops,
// caught-up keys). The Coordinator keeps plain counters, so no exporter
// runs on its hot path. Safe for simultaneous use.
type ClusterCollector struct {
	m     *Metrics
	stats ClusterStats

	mu         sync.Mutex // the last values seen, for Sync's deltas
	mismatches uint64
	sent, recv map[string]uint64
}

// NewClusterCollector returns the collector of the Coordinator stats
// returns, counting into m. Register it on the registry m uses, and call
// Sync before each gather.
func NewClusterCollector(m *Metrics, stats ClusterStats) *ClusterCollector {
	return &ClusterCollector{m: m, stats: stats, sent: map[string]uint64{}, recv: map[string]uint64{}}
}

// Sync copies the Coordinator's counters into the Metrics' series:
// flux_cluster_members, flux_cluster_config_mismatches_total and
// flux_gossip_updates_total.
func (c *ClusterCollector) Sync() {
	st, ok := c.stats()
	if !ok {
		return
	}
	c.m.ClusterMembers(st.Members)
	c.mu.Lock()
	defer c.mu.Unlock()
	for ; c.mismatches < st.Membership.Mismatches; c.mismatches++ {
		c.m.ConfigMismatch()
	}
	var sent, recv int
	for name, ls := range st.Limiters {
		sent += delta(c.sent, name, ls.Published)
		recv += delta(c.recv, name, ls.Applied)
	}
	for name := range c.sent {
		if _, ok := st.Limiters[name]; !ok {
			delete(c.sent, name)
			delete(c.recv, name)
		}
	}
	c.m.Gossip("sent", sent)
	c.m.Gossip("received", recv)
}

// delta returns how much counter name grew since last seen (all of it if
// it went back: the limiter was registered anew) and remembers it.
func delta(last map[string]uint64, name string, now uint64) int {
	prev, ok := last[name]
	last[name] = now
	if !ok || now < prev {
		return int(now)
	}
	return int(now - prev)
}

var (
	descMismatched = prometheus.NewDesc("flux_cluster_config_mismatched_members",
		"Members whose limiter configuration fingerprint differs from this node's.", nil, nil)
	descSuspected = prometheus.NewDesc("flux_cluster_suspected_owners",
		"Owners bypassed (checks go to the failure policy) because a forwarded check to them failed since their last heartbeat.", nil, nil)
	descMembership = prometheus.NewDesc("flux_cluster_membership_events_total",
		"Membership changes seen by this node, by event (joined, left, timed_out).", []string{"event"}, nil)
	descServed = prometheus.NewDesc("flux_cluster_served_total",
		"Checks this node decided for peers as the owner of their keys (the peers count them in flux_cluster_answers_total{path=\"owner\"}).", []string{"limiter"}, nil)
	descForwardFailures = prometheus.NewDesc("flux_cluster_forward_failures_total",
		"Forward requests to owners that failed (timeout, no responders).", nil, nil)
	descPublishErrors = prometheus.NewDesc("flux_cluster_publish_errors_total",
		"Gossip batches that could not be published.", nil, nil)
	descDropped = prometheus.NewDesc("flux_cluster_dropped_total",
		"Cluster messages or updates dropped, by reason: malformed (undecodable message), slow (the node fell behind), unapplied (an update for an unknown or local limiter, or refused by the limiter), unauthenticated (not signed with the cluster secret), replayed (seen before, stamped too far from this node's clock, or meant for another node), spoofed (a heartbeat naming another node), throttled (more updates than one message or one peer's second may carry), future (an admission stamped beyond the clock skew bound ahead of this node's clock).", []string{"reason"}, nil)
	descCaughtUp = prometheus.NewDesc("flux_cluster_caught_up_keys_total",
		"Key states restored from peers when the node joined.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *ClusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMismatched, descSuspected, descMembership, descServed, descForwardFailures, descPublishErrors, descDropped, descCaughtUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *ClusterCollector) Collect(ch chan<- prometheus.Metric) {
	st, ok := c.stats()
	if !ok {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descMismatched, float64(st.Membership.Mismatched))
	gauge(descSuspected, float64(st.Suspected))
	counter(descMembership, st.Membership.Joined, "joined")
	counter(descMembership, st.Membership.Left, "left")
	counter(descMembership, st.Membership.TimedOut, "timed_out")
	var publishErrs uint64
	for _, name := range slices.Sorted(maps.Keys(st.Limiters)) {
		ls := st.Limiters[name]
		publishErrs += ls.PublishErrors
		if ls.Mode != cluster.Local {
			counter(descServed, ls.Served, name)
		}
	}
	counter(descForwardFailures, st.Forwarder.Failed)
	counter(descPublishErrors, publishErrs)
	counter(descDropped, st.Bus.Malformed, "malformed")
	counter(descDropped, st.Bus.Dropped, "slow")
	counter(descDropped, st.Bus.Unauthenticated, "unauthenticated")
	counter(descDropped, st.Bus.Replayed, "replayed")
	counter(descDropped, st.Bus.Spoofed, "spoofed")
	counter(descDropped, st.Bus.Throttled, "throttled")
	counter(descDropped, st.UpdatesRefused, "future")
	counter(descDropped, st.UpdatesDropped, "unapplied")
	counter(descCaughtUp, st.CaughtUp)
}
