package node

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
	"github.com/fluxlimiter/flux/cluster"
	"github.com/fluxlimiter/flux/internal/wire"
)

// This file wires the cluster (bus/, cluster/, docs/CLUSTER.md) into the
// node: the configuration, the embedded server's routes, the Coordinator's
// life cycle, the check paths of non-local limiters and the cluster
// metrics.

// DefaultClusterName is the cluster a node belongs to unless cluster_name
// (--cluster-name) says otherwise: the embedded server's route cluster and
// the namespace of the internal subjects (_FLUX.v1.flux.>).
const DefaultClusterName = "flux"

// ClusterConfig is how a node takes part in a cluster. Its fields are
// settings of Config (flat YAML keys, like the flags). A node coordinates
// with others when one of its limiters has a mode other than local, or when
// ClusterListen or Routes is set.
type ClusterConfig struct {
	// ClusterName names the cluster (--cluster-name; DefaultClusterName
	// when empty): 1 to 64 of A-Z a-z 0-9 _ -. Nodes coordinate only with
	// nodes of the same name, so several clusters can share one NATS.
	ClusterName string `yaml:"cluster_name"`
	// ClusterListen is the HOST:PORT where the embedded NATS server takes
	// routes from the other nodes' servers (--cluster-listen); port -1
	// picks a free one. Empty: the embedded server is not clustered.
	ClusterListen string `yaml:"cluster_listen"`
	// Routes are the other servers' route URLs, nats-route://HOST:PORT
	// (--routes, comma-separated; in YAML a list or one comma-separated
	// string). The same full list may be given to every node, its own
	// route included.
	Routes Routes `yaml:"routes"`
	// Heartbeat is the interval of the membership heartbeats (--heartbeat;
	// bus.DefaultHeartbeat, 1s, when zero). A node missing three is
	// dropped by its peers.
	Heartbeat Duration `yaml:"heartbeat"`
}

// LimiterClusterConfig is how one limiter takes part in the cluster: the
// cluster settings of LimiterConfig (docs/CLUSTER.md states what each mode
// guarantees).
type LimiterClusterConfig struct {
	// Mode is local (the default: no coordination), best-effort, strict or
	// hybrid.
	Mode string `yaml:"mode"`
	// SyncInterval is how long admissions are aggregated before they are
	// gossiped (best-effort, strict and hybrid; cluster.DefaultSyncInterval
	// when zero).
	SyncInterval Duration `yaml:"sync_interval"`
	// OwnerDeadline is how long a check waits for the key's owner before
	// OnOwnerFailure decides (strict and hybrid;
	// cluster.DefaultOwnerDeadline when zero).
	OwnerDeadline Duration `yaml:"owner_deadline"`
	// OnOwnerFailure is local (decide on the local view, the default),
	// open (allow) or closed (deny) (strict and hybrid).
	OnOwnerFailure string `yaml:"on_owner_failure"`
	// HybridThreshold is the share of the key's capacity the local view
	// must show left after a request for the node to decide it alone
	// (hybrid; cluster.DefaultHybridThreshold when zero).
	HybridThreshold float64 `yaml:"hybrid_threshold"`
}

// Routes is a list of route URLs. In YAML it is a list of strings or one
// comma-separated string.
type Routes []string

// UnmarshalYAML reads a list or a comma-separated string.
func (r *Routes) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var s string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*r = ParseRoutes(s)
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*r = l
	return nil
}

// ParseRoutes splits a comma-separated list of route URLs, dropping empty
// entries and spaces around them.
func ParseRoutes(s string) Routes {
	var r Routes
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			r = append(r, u)
		}
	}
	return r
}

// clusterMode is the mode a limiter's configuration names.
func (lc LimiterConfig) clusterMode() cluster.Mode {
	m, _ := cluster.ParseMode(lc.Mode) // validated
	return m
}

// clusterConfig is the Coordinator's configuration of the limiter.
func (lc LimiterConfig) clusterConfig() cluster.LimiterConfig {
	f, _ := cluster.ParseFailure(lc.OnOwnerFailure) // validated
	return cluster.LimiterConfig{
		Mode:            lc.clusterMode(),
		SyncInterval:    time.Duration(lc.SyncInterval),
		OwnerDeadline:   time.Duration(lc.OwnerDeadline),
		OnOwnerFailure:  f,
		HybridThreshold: lc.HybridThreshold,
	}
}

// clustered reports whether the node coordinates with others.
func (c Config) clustered() bool {
	if c.ClusterListen != "" || len(c.Routes) > 0 {
		return true
	}
	for _, lc := range c.Limiters {
		if lc.clusterMode() != cluster.Local {
			return true
		}
	}
	return false
}

func (c Config) clusterName() string {
	if c.ClusterName == "" {
		return DefaultClusterName
	}
	return c.ClusterName
}

// validateCluster reports the problems of the cluster settings.
func (c Config) validateCluster() []error {
	var problems []error
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...)))
	}
	if c.ClusterName != "" && bus.ValidNodeID(c.ClusterName) != nil {
		bad("cluster_name (--cluster-name) %q: want 1 to %d of A-Z a-z 0-9 _ -", c.ClusterName, bus.MaxNodeIDLen)
	}
	if c.ClusterListen != "" {
		if _, _, err := splitHostPort(c.ClusterListen, true); err != nil {
			bad("cluster_listen (--cluster-listen) %q: %v", c.ClusterListen, err)
		}
	}
	for _, r := range c.Routes {
		if u, err := url.Parse(r); err != nil || u.Hostname() == "" || u.Port() == "" {
			bad("routes (--routes): %q is not a route URL like nats-route://HOST:PORT", r)
		}
	}
	if c.NATSURL != "" && (c.ClusterListen != "" || len(c.Routes) > 0) {
		bad("cluster_listen and routes cluster the embedded NATS server; with nats_url (--nats-url) the NATS deployment is clustered by its own configuration")
	}
	if c.NATSURL == "" && len(c.Routes) > 0 && c.ClusterListen == "" {
		bad("routes (--routes) need cluster_listen (--cluster-listen): the route port of this node's embedded server")
	}
	if c.Heartbeat < 0 || time.Duration(c.Heartbeat) > time.Minute {
		bad("heartbeat (--heartbeat) %v: want 0 (the default, %v) to 1m", c.Heartbeat, bus.DefaultHeartbeat)
	}
	if c.clustered() && c.NodeID != "" && bus.ValidNodeID(c.NodeID) != nil {
		bad("node_id (--node-id) %q: a node in a cluster needs 1 to %d of A-Z a-z 0-9 _ -", c.NodeID, bus.MaxNodeIDLen)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Limiters)) {
		lc := c.Limiters[name]
		mode, err := cluster.ParseMode(lc.Mode)
		if err != nil {
			bad("limiter %q: mode %q: want local, best-effort, strict or hybrid", name, lc.Mode)
			continue
		}
		if _, err := cluster.ParseFailure(lc.OnOwnerFailure); err != nil {
			bad("limiter %q: on_owner_failure %q: want local, open or closed", name, lc.OnOwnerFailure)
		}
		if lc.SyncInterval < 0 || lc.OwnerDeadline < 0 {
			bad("limiter %q: negative sync_interval or owner_deadline", name)
		}
		if lc.HybridThreshold < 0 || lc.HybridThreshold > 1 || lc.HybridThreshold != lc.HybridThreshold {
			bad("limiter %q: hybrid_threshold %v: want 0 (the default, %v) to 1", name, lc.HybridThreshold, cluster.DefaultHybridThreshold)
		}
		// Settings the mode does not use are refused: a typo in the mode
		// must not silently drop them.
		if mode == cluster.Local && lc.SyncInterval != 0 {
			bad("limiter %q: sync_interval is for the modes best-effort, strict and hybrid", name)
		}
		if mode < cluster.Strict && (lc.OwnerDeadline != 0 || lc.OnOwnerFailure != "") {
			bad("limiter %q: owner_deadline and on_owner_failure are for the modes strict and hybrid", name)
		}
		if mode != cluster.Hybrid && lc.HybridThreshold != 0 {
			bad("limiter %q: hybrid_threshold is for the mode hybrid", name)
		}
	}
	return problems
}

// nodeIDFile is the file in the data dir that keeps a generated node id.
const nodeIDFile = "node-id"

// resolveNodeID returns the configured node id or, when there is none, a
// generated one: <host>-<7 random characters>. A node with an embedded
// server keeps it in its data dir (nodeIDFile), so that it restarts under
// the same id; two nodes on one machine have two data dirs, hence two ids.
// A node joining a NATS URL gets a new id at each start.
func resolveNodeID(cfg Config, log *slog.Logger) string {
	if cfg.NodeID != "" {
		return cfg.NodeID
	}
	if cfg.NATSURL != "" || cfg.DataDir == "" {
		return generateNodeID()
	}
	path := filepath.Join(cfg.DataDir, nodeIDFile)
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if bus.ValidNodeID(id) == nil {
			return id
		}
		log.Warn("ignoring an invalid node id in the data dir", "file", path)
	}
	id := generateNodeID()
	err := os.MkdirAll(cfg.DataDir, 0o750)
	if err == nil {
		err = os.WriteFile(path, []byte(id+"\n"), 0o640)
	}
	if err != nil {
		log.Warn("cannot keep the generated node id in the data dir: the node gets another one at each start; set --node-id", "node_id", id, "error", err)
	}
	return id
}

func generateNodeID() string {
	host, _ := os.Hostname()
	b := []byte(host)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	host = strings.Trim(string(b[:min(len(b), 48)]), "-")
	if host == "" {
		host = "flux"
	}
	var r [5]byte
	_, _ = rand.Read(r[:])
	return host + "-" + strings.ToLower(base32.StdEncoding.EncodeToString(r[:])[:7])
}

// nodeCluster is a node's part of the cluster.
type nodeCluster struct {
	// coord is the running Coordinator, nil when the node is not clustered.
	coord atomic.Pointer[cluster.Coordinator]
	// registered is what each limiter was registered with (n.mu).
	registered map[string]registration
	// serverOptions, set by tests before Start, adjusts the embedded
	// server's options.
	serverOptions func(*server.Options)

	// checkLane and batchLane are the lanes' channels (lanes.go), where
	// handOff passes the micro endpoints' requests.
	checkLane, batchLane atomic.Pointer[chan *nats.Msg]

	collectorOnce sync.Once

	syncMu     sync.Mutex // the deltas below, at scrape time
	mismatches uint64
	sent, recv map[string]uint64
}

type registration struct {
	lim *flux.Limiter
	cfg cluster.LimiterConfig
}

// clusterServerOptions makes the embedded server take routes at
// cluster_listen and route to routes.
func (n *Node) clusterServerOptions(cfg Config, opts *server.Options) error {
	if cfg.ClusterListen == "" {
		return nil
	}
	host, port, err := splitHostPort(cfg.ClusterListen, true)
	if err != nil {
		return err
	}
	if port == 0 {
		port = server.RANDOM_PORT // 0 would mean no route port
	}
	if port != server.RANDOM_PORT {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return &ListenError{Flag: "--cluster-listen", Addr: cfg.ClusterListen, Err: err}
		}
		ln.Close()
	}
	opts.Cluster = server.ClusterOpts{Name: cfg.clusterName(), Host: host, Port: port, PoolSize: -1}
	if len(cfg.Routes) > 0 {
		opts.Routes = server.RoutesFromStr(strings.Join(cfg.Routes, ","))
	}
	if n.cl.serverOptions != nil {
		n.cl.serverOptions(opts)
	}
	return nil
}

// startCluster joins the cluster if the configuration asks for one: a
// NATS bus on the node's connection, a Coordinator with every limiter
// registered, started (caught up from the peers) before the service
// answers. n.mu is held.
func (n *Node) startCluster(ctx context.Context, cfg Config, set *limiterSet) error {
	if !cfg.clustered() || n.cl.coord.Load() != nil {
		return nil
	}
	log := n.log.With("component", "cluster")
	interval := orDefault(time.Duration(cfg.Heartbeat), bus.DefaultHeartbeat)
	if n.srv != nil && len(cfg.Routes) > 0 {
		n.waitRoutes(ctx, 2*interval)
	}
	b, err := bus.NewNATS(bus.NATSConfig{Conn: n.nc, Node: cfg.NodeID, Cluster: cfg.clusterName(), Logger: log,
		Security: bus.Security{Insecure: true}})
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
	n.cl.collectorOnce.Do(func() {
		if err := n.reg.Register(clusterCollector{n}); err != nil {
			n.log.Warn("cluster metrics not exported", "error", err)
		}
	})
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

// lane returns where the lane of subject keeps its channel.
func (c *nodeCluster) lane(subject string) *atomic.Pointer[chan *nats.Msg] {
	if subject == SubjectCheck {
		return &c.checkLane
	}
	return &c.batchLane
}

// handOff passes a request that reached a micro endpoint to the lane of
// its subject, when the node is clustered, and reports whether it did. A
// micro endpoint is one subscription, which delivers its requests one at a
// time: a check forwarded to its key's owner would hold the requests
// queued behind it for a network round trip each (in a closed-loop
// benchmark of strict mode they piled up there, p99 0.5 s). The lanes
// answer it in parallel. The reply is then the lane's, published on the
// request's reply subject, not micro's: micro counts the request, not its
// errors (lane_errors does).
func (n *Node) handOff(req micro.Request, subject string) bool {
	if n.cl.coord.Load() == nil || n.draining.Load() {
		return false
	}
	lane := n.cl.lane(subject).Load()
	if lane == nil {
		return false
	}
	m := &nats.Msg{Subject: subject, Reply: req.Reply(), Data: req.Data(), Header: nats.Header(req.Headers())}
	select {
	case *lane <- m:
		return true
	default:
		return false // full: answer here
	}
}

// clusterFor returns the Coordinator that decides e's checks, nil for a
// local limiter (the fast path) or a node not clustered.
func (n *Node) clusterFor(e *limiterEntry) *cluster.Coordinator {
	if m := e.cfg.Mode; m == "" || m == "local" {
		return nil
	}
	return n.cl.coord.Load()
}

// clusterError maps a Coordinator's error to its reply.
func clusterError(err error) wire.ErrorBody {
	if errors.Is(err, cluster.ErrClosed) {
		return wire.ErrorBody{Code: wire.CodeUnavailable, Reason: wire.ReasonShuttingDown, Description: err.Error()}
	}
	return errorFor(err)
}

// checkCluster decides one check of a non-local limiter through the
// Coordinator.
func (h *handler) checkCluster(co *cluster.Coordinator, e *limiterEntry, it *wire.Item) ([]byte, wire.ErrorBody) {
	n := h.n
	t0 := time.Now()
	a, err := co.Check(limiterCtx, e.name, it.Key, int(it.Cost))
	if errors.Is(err, cluster.ErrUnknownLimiter) {
		// Not registered (a failed reload): decide alone.
		a.Decision, err = e.lim.CheckN(limiterCtx, it.Key, int(it.Cost))
		a.Path = cluster.PathLocal
	}
	n.met.ObserveCheck(e.name, time.Since(t0))
	h.sp.Result(a.Decision, err)
	if err != nil {
		eb := clusterError(err)
		n.met.Error(e.name, strconv.Itoa(eb.Code))
		return nil, eb
	}
	n.met.Decision(e.name, a.Allowed)
	n.met.Answer(e.name, a.Path.String())
	h.buf = wire.AppendDecision(h.buf[:0], a.Decision)
	return h.buf, wire.ErrorBody{}
}

// decide runs the valid items of limiter e: through the Coordinator for a
// non-local limiter, else with one CheckBatchEach call (decideLocal).
func (h *handler) decide(e *limiterEntry, items []wire.Item, res []result) {
	if co := h.n.clusterFor(e); co != nil {
		h.decideCluster(co, e, items, res)
		return
	}
	h.decideLocal(e, items, res)
}

// decideCluster runs the valid items of a non-local limiter e with one
// Coordinator.CheckBatch call: items the node decides go to the limiter in
// one batch, the others to their owners, coalesced per owner.
func (h *handler) decideCluster(co *cluster.Coordinator, e *limiterEntry, items []wire.Item, res []result) {
	var reqs []flux.Request
	var idx []int
	for i := range items {
		if res[i].entry == e && res[i].e.Code == 0 {
			reqs = append(reqs, flux.Request{Key: items[i].Key, Cost: int(items[i].Cost)})
			idx = append(idx, i)
		}
	}
	if len(reqs) == 0 {
		return
	}
	n := h.n
	out := make([]cluster.Answer, len(reqs))
	errs := make([]error, len(reqs))
	t0 := time.Now()
	err := co.CheckBatch(limiterCtx, e.name, reqs, out, errs)
	if errors.Is(err, cluster.ErrUnknownLimiter) {
		h.decideLocal(e, items, res) // not registered (a failed reload): decide alone
		return
	}
	n.met.ObserveCheck(e.name, time.Since(t0))
	if err != nil {
		eb := clusterError(err)
		for _, i := range idx {
			res[i].e = eb
		}
		n.met.Error(e.name, strconv.Itoa(eb.Code))
		return
	}
	allowed, denied := 0, 0
	var paths [3]int
	for j, i := range idx {
		if errs[j] != nil {
			res[i].e = clusterError(errs[j])
			n.met.Error(e.name, strconv.Itoa(res[i].e.Code))
			continue
		}
		res[i].d = out[j].Decision
		if out[j].Allowed {
			allowed++
		} else {
			denied++
		}
		if p := int(out[j].Path); p < len(paths) {
			paths[p]++
		}
	}
	n.met.Decisions(e.name, allowed, denied)
	for p, c := range paths {
		path := cluster.Path(p).String()
		for range c {
			n.met.Answer(e.name, path)
		}
	}
}

// gatherer is what /metrics serves: the registry, after the cluster's
// counters are brought up to date.
func (n *Node) gatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		n.syncClusterMetrics()
		return n.reg.Gather()
	})
}

// syncClusterMetrics copies the Coordinator's counters into the series the
// metrics package defines for them: flux_cluster_members,
// flux_cluster_config_mismatches_total and flux_gossip_updates_total.
func (n *Node) syncClusterMetrics() {
	co := n.cl.coord.Load()
	if co == nil {
		return
	}
	st := co.Stats()
	n.met.ClusterMembers(st.Members)
	n.cl.syncMu.Lock()
	defer n.cl.syncMu.Unlock()
	for ; n.cl.mismatches < st.Membership.Mismatches; n.cl.mismatches++ {
		n.met.ConfigMismatch()
	}
	if n.cl.sent == nil {
		n.cl.sent, n.cl.recv = make(map[string]uint64), make(map[string]uint64)
	}
	var sent, recv int
	for name, ls := range st.Limiters {
		sent += delta(n.cl.sent, name, ls.Published)
		recv += delta(n.cl.recv, name, ls.Applied)
	}
	for name := range n.cl.sent {
		if _, ok := st.Limiters[name]; !ok {
			delete(n.cl.sent, name)
			delete(n.cl.recv, name)
		}
	}
	n.met.Gossip("sent", sent)
	n.met.Gossip("received", recv)
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

// clusterCollector exports, at scrape time, the cluster counters the
// metrics package has no series for.
type clusterCollector struct{ n *Node }

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
		"Cluster messages or updates dropped, by reason: malformed (undecodable message), slow (the node fell behind), unapplied (an update for an unknown or local limiter, or refused by the limiter).", []string{"reason"}, nil)
	descCaughtUp = prometheus.NewDesc("flux_cluster_caught_up_keys_total",
		"Key states restored from peers when the node joined.", nil, nil)
)

// Describe implements prometheus.Collector.
func (clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMismatched, descSuspected, descMembership, descServed, descForwardFailures, descPublishErrors, descDropped, descCaughtUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	co := c.n.cl.coord.Load()
	if co == nil {
		return
	}
	st := co.Stats()
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
	counter(descDropped, st.UpdatesDropped, "unapplied")
	counter(descCaughtUp, st.CaughtUp)
}
