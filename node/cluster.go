package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
	"github.com/fluxlimiter/flux/cluster"
	"github.com/fluxlimiter/flux/metrics"
)

// This file wires the Coordinator (bus/, cluster/, docs/CLUSTER.md) into
// the node: its life cycle across Start, Reload and Shutdown and the
// export of its counters (metrics.ClusterCollector). Its configuration is
// in clusterconfig.go; it decides checks as a decider (decide.go).

// nodeCluster is a node's part of the cluster.
type nodeCluster struct {
	// coord is the running Coordinator, nil when the node is not clustered.
	coord atomic.Pointer[cluster.Coordinator]
	// registered is what each limiter was registered with (n.mu).
	registered map[string]registration
	// serverOptions, set by tests before Start, adjusts the embedded
	// server's options.
	serverOptions func(*server.Options)

	// collector exports the Coordinator's counters (metrics/cluster.go),
	// registered when the node first joins.
	collector atomic.Pointer[metrics.ClusterCollector]
}

type registration struct {
	lim *flux.Limiter
	cfg cluster.LimiterConfig
}

// startCluster joins the cluster if the configuration asks for one: a
// NATS bus on the node's connection, a Coordinator with every limiter
// registered, started (caught up from the peers) before the service
// answers. n.mu is held.
func (n *Node) startCluster(ctx context.Context, cfg Config, set *limiterSet) error {
	if !cfg.clustered() || n.cl.coord.Load() != nil {
		return nil
	}
	secret, err := cfg.clusterSecret()
	if err != nil {
		return err
	}
	log := n.log.With("component", "cluster")
	interval := orDefault(time.Duration(cfg.Heartbeat), bus.DefaultHeartbeat)
	if n.srv != nil && len(cfg.Routes) > 0 {
		n.waitRoutes(ctx, 2*interval)
	}
	b, err := bus.NewNATS(bus.NATSConfig{Conn: n.nc, Node: cfg.NodeID, Cluster: cfg.clusterName(), Logger: log,
		Security: bus.Security{Secret: secret}})
	if err != nil {
		return fmt.Errorf("flux-node: cluster: %w", err)
	}
	// The join wait covers a heartbeat interval: the peers' periodic
	// heartbeats then reach a node whose first (joining) heartbeat went
	// out before its routes or their interest were in place, so it learns
	// its peers, and catches up from them, before it owns keys.
	co, err := cluster.New(b, cluster.Config{Heartbeat: interval, JoinWait: interval + interval/4, Logger: log})
	if err != nil {
		_ = b.Close()
		return fmt.Errorf("flux-node: cluster: %w", err)
	}
	n.cl.registered = make(map[string]registration)
	for _, name := range slices.Sorted(maps.Keys(set.byName)) {
		e := set.byName[name]
		if err := co.Register(name, e.lim, e.cfg.clusterConfig()); err != nil {
			_ = co.Close()
			return fmt.Errorf("flux-node: cluster: limiter %q: %w", name, err)
		}
		n.cl.registered[name] = registration{e.lim, e.cfg.clusterConfig()}
	}
	if err := co.Start(ctx); err != nil {
		_ = co.Close()
		return fmt.Errorf("flux-node: join cluster %q: %w", cfg.clusterName(), err)
	}
	n.cl.coord.Store(co)
	if n.cl.collector.Load() == nil {
		c := metrics.NewClusterCollector(n.met, n.clusterStats)
		if err := n.reg.Register(c); err != nil {
			n.log.Warn("cluster metrics not exported", "error", err)
		} else {
			n.cl.collector.Store(c)
		}
	}
	st := co.Stats()
	n.met.ClusterMembers(st.Members)
	n.log.Info("joined the cluster", "cluster", cfg.clusterName(), "node_id", cfg.NodeID,
		"members", st.Members, "caught_up_keys", st.CaughtUp, "heartbeat", orDefault(time.Duration(cfg.Heartbeat), bus.DefaultHeartbeat))
	return nil
}

// waitRoutes waits until the embedded server has a route to another
// server, at most wait: a restarted node should see its peers before it
// asks them for state. The first node of a new cluster waits in vain.
func (n *Node) waitRoutes(ctx context.Context, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for n.srv.NumRoutes() == 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if n.srv.NumRoutes() == 0 {
		n.log.Info("no route to another server yet: joining the cluster alone", "waited", wait)
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// reloadCluster brings the Coordinator in line with the limiters of a
// reload, before they are published to the handlers: it joins the cluster
// if the new configuration is the first to need one, registers new and
// changed limiters (a limiter whose mode changed, or replaced by another
// algorithm) and unregisters removed ones. n.mu is held.
func (n *Node) reloadCluster(ctx context.Context, cfg Config, next *limiterSet) error {
	if n.cl.coord.Load() == nil {
		if !cfg.clustered() || n.nc == nil {
			return nil
		}
		cfg.NodeID = n.cfg.NodeID
		if err := n.startCluster(ctx, cfg, next); err != nil {
			return fmt.Errorf("limiters keep deciding alone: %w", err)
		}
		return nil
	}
	co := n.cl.coord.Load()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(next.byName)) {
		e := next.byName[name]
		r := registration{e.lim, e.cfg.clusterConfig()}
		if n.cl.registered[name] == r {
			continue
		}
		if err := co.Register(name, e.lim, r.cfg); err != nil {
			errs = append(errs, fmt.Errorf("limiter %q: %w", name, err))
			continue
		}
		if prev, ok := n.cl.registered[name]; ok && prev.cfg != r.cfg {
			n.log.Info("limiter's cluster settings changed", "limiter", name, "mode", r.cfg.Mode.String(), "was", prev.cfg.Mode.String())
		}
		n.cl.registered[name] = r
	}
	for name := range n.cl.registered {
		if next.byName[name] == nil {
			co.Unregister(name)
			delete(n.cl.registered, name)
		}
	}
	return errors.Join(errs...)
}

// stopCluster leaves the cluster: the Coordinator publishes what is
// pending, says it leaves and closes its bus. Called after the service
// stopped taking requests, before the connection closes. n.mu is held.
func (n *Node) stopCluster() {
	if co := n.cl.coord.Swap(nil); co != nil {
		_ = co.Close()
		n.met.ClusterMembers(0)
	}
}

// Cluster returns the node's Coordinator, nil if it is not clustered.
func (n *Node) Cluster() *cluster.Coordinator { return n.cl.coord.Load() }

// gatherer is what /metrics serves: the registry, after the cluster's
// counters are brought up to date.
func (n *Node) gatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		if c := n.cl.collector.Load(); c != nil {
			c.Sync()
		}
		return n.reg.Gather()
	})
}

// clusterStats is the running Coordinator's statistics, for the cluster
// collector.
func (n *Node) clusterStats() (cluster.Stats, bool) {
	co := n.cl.coord.Load()
	if co == nil {
		return cluster.Stats{}, false
	}
	return co.Stats(), true
}
