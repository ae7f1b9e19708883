// Package node is everything flux-node wires together: named limiters, an
// embedded NATS server (or a connection to an existing NATS), the `flux`
// micro service answering checks over NATS request-reply, and the HTTP
// admin endpoints. It is importable so tests and programs can run nodes
// in-process; cmd/flux-node is a thin main over it.
//
// # The request path
//
// Every request goes one way, like a check in the library:
//
//		door (door.go) → decode → resolve → decide → encode → reply → observe
//		                 (pipeline.go)       (decide.go)     (reply.go) (observe.go)
//
//	  - One door per subject: queue subscriptions feeding one channel, read
//	    by workers. A worker takes every request waiting and runs them
//	    through the pipeline together, so concurrent single checks are
//	    decided as one batch per limiter: under load that is what makes a
//	    single check cost about what a batched one does. (micro endpoints
//	    deliver one request per Handle call, which must reply before it
//	    returns, so requests are seldom decided together; the node answers
//	    micro's discovery protocol itself, from the doors' counters: see
//	    door.go.)
//	  - Resolve is the one place where a request's limiter, key and cost are
//	    checked; errors.go the one place where error replies are built;
//	    reply.go the one place where a reply is published, and where reply
//	    subjects a client may not own are refused.
//	  - Decide goes through one small interface, decider, which the local
//	    limiter and the cluster Coordinator both implement: the pipeline
//	    does not know the limiter's mode.
//	  - The observer records metrics and spans from the results, after the
//	    reply; the steps record nothing.
//
// The wire protocol is documented in docs/PROTOCOL.md; its names are
// defined once, in package protocol.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/metrics"
	"github.com/fluxlimiter/flux/protocol"
	"github.com/fluxlimiter/flux/tracing"
)

// Version is the version of the flux micro service (semver).
const Version = "0.1.0"

// Wire names, fixed by the protocol.
//
// Deprecated: use the protocol package's names (protocol.ServiceName,
// protocol.Group, protocol.SubjectCheck...), the protocol's one
// definition.
const (
	ServiceName       = protocol.ServiceName
	Group             = protocol.Group
	SubjectCheck      = protocol.SubjectCheck
	SubjectCheckBatch = protocol.SubjectCheckBatch
	SubjectLimiters   = protocol.SubjectLimiters
)

// Errors of the node's life cycle.
var (
	// ErrStarted: Start was called twice.
	ErrStarted = errors.New("flux-node: already started")
	// ErrShutdown: the node has been shut down.
	ErrShutdown = errors.New("flux-node: shut down")
)

// ListenError reports an address the node could not listen on, naming the
// flag (and config setting) that chooses another.
type ListenError struct {
	Flag string // "--nats-listen" or "--http-listen"
	Addr string
	Err  error
}

// Error says what failed and which flag to change.
func (e *ListenError) Error() string {
	return fmt.Sprintf("flux-node: cannot listen on %s: %v; choose another address with %s HOST:PORT", e.Addr, e.Err, e.Flag)
}

// Unwrap returns the cause.
func (e *ListenError) Unwrap() error { return e.Err }

// Node is one flux-node. Create it with New, then Start it; Shutdown stops
// it. All methods are safe for simultaneous use.
type Node struct {
	log *slog.Logger
	reg *prometheus.Registry
	met *metrics.Metrics
	tr  *tracing.Tracer // nil: tracing off (WithTracerProvider)

	// Immutable after New: the settings handlers read without locks.
	maxKeyLen  int
	maxBatch   int
	maxPayload int

	limiters atomic.Pointer[limiterSet]
	draining atomic.Bool

	mu       sync.Mutex // Start, Reload, Shutdown
	cfg      Config
	started  bool
	shutOnce sync.Once
	shutDone chan struct{}
	shutErr  error

	srv       *server.Server
	embAuth   *embeddedAuth // the embedded server's authorization (embedded.go)
	dirLock   *os.File      // holds the data dir's lock while the embedded server runs (datadir.go)
	nc        *nats.Conn
	ncClosed  chan struct{}
	svc       *service  // the doors (door.go)
	pub       publisher // replies: nc
	clientURL string
	httpSrv   *http.Server
	httpAddr  string
	wg        sync.WaitGroup // the HTTP server's goroutine

	// The request pipeline (pipeline.go), immutable after New.
	obs     observer
	replies *replyRule

	cl nodeCluster // the cluster (cluster.go)
	st *nodeStore  // the store (store.go); nil: memory
}

// New validates cfg and creates the node's limiters and metrics (a node
// with a store makes its limiters in Start, once the store is connected,
// so that they use what the store can do). Nothing listens until Start. logger may be nil (no logs); opts add what a config
// cannot hold (WithTracerProvider). Call Shutdown to release the limiters
// even if Start is never called.
func New(cfg Config, logger *slog.Logger, opts ...Option) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Limiters = maps.Clone(cfg.Limiters)
	cfg.NodeID = resolveNodeID(cfg, logger)
	n := &Node{
		log:        logger,
		reg:        prometheus.NewRegistry(),
		cfg:        cfg,
		maxKeyLen:  cfg.MaxKeyLen,
		maxBatch:   cfg.MaxBatch,
		maxPayload: cfg.MaxPayload,
		shutDone:   make(chan struct{}),
		ncClosed:   make(chan struct{}),
	}
	for _, o := range opts {
		o(n)
	}
	if err := n.reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, err
	}
	if err := n.reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	met, err := metrics.New(n.reg)
	if err != nil {
		return nil, err
	}
	n.met = met
	n.obs = observer{met}
	n.replies = newReplyRule(cfg.replyPrefixes())
	n.st = newNodeStore(cfg)
	if n.st != nil {
		// Made by Start, once the store is connected.
		n.limiters.Store(&limiterSet{byName: map[string]*limiterEntry{}})
		return n, nil
	}
	if err := n.buildLimiters(cfg); err != nil {
		return nil, err
	}
	return n, nil
}

// buildLimiters makes the configured limiters and publishes them.
func (n *Node) buildLimiters(cfg Config) error {
	set := &limiterSet{byName: make(map[string]*limiterEntry, len(cfg.Limiters))}
	for _, name := range slices.Sorted(maps.Keys(cfg.Limiters)) {
		e, err := n.newEntry(name, cfg.Limiters[name])
		if err != nil {
			set.closeAll()
			return err
		}
		set.byName[name] = e
		n.met.Track(name, e.lim)
	}
	set.encodeInfo()
	n.limiters.Store(set)
	return nil
}

// Limiter returns the limiter of that name, as currently configured. A
// node with a store makes its limiters when Start has connected the store:
// before, it has none.
func (n *Node) Limiter(name string) (*flux.Limiter, bool) {
	e := n.limiters.Load().byName[name]
	if e == nil {
		return nil, false
	}
	return e.lim, true
}

// Registry returns the Prometheus registry served on /metrics.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Config returns the configuration in force (after reloads).
func (n *Node) Config() Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.cfg
	c.Limiters = maps.Clone(c.Limiters)
	return c
}

// Start starts the embedded NATS server (unless the config names a NATS
// URL), connects to NATS, registers the flux service and starts the HTTP
// admin endpoints. It returns once the node answers requests. On failure
// it undoes what it started; call Shutdown to release the limiters.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-n.shutDone:
		return ErrShutdown
	default:
	}
	if n.started {
		return ErrStarted
	}
	n.started = true
	var httpLn net.Listener
	defer func() {
		if err != nil {
			if httpLn != nil {
				httpLn.Close()
			}
			n.stopTransport(context.Background())
			n.clientURL, n.httpAddr = "", ""
		}
	}()
	cfg := n.cfg
	if cfg.HTTPListen != "" {
		// Bind first, so a port in use fails before anything starts.
		if httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			return &ListenError{Flag: "--http-listen", Addr: cfg.HTTPListen, Err: err}
		}
	}
	url := cfg.NATSURL
	if url == "" {
		if url, err = n.startEmbedded(ctx, cfg); err != nil {
			return err
		}
	}
	n.clientURL = url
	if err := n.connect(ctx, cfg, url); err != nil {
		return err
	}
	if err := n.connectStore(ctx, cfg); err != nil {
		return err
	}
	if n.st != nil {
		if err := n.buildLimiters(cfg); err != nil {
			return err
		}
	}
	if err := n.startCluster(ctx, cfg, n.limiters.Load()); err != nil {
		return err
	}
	if err := n.startService(cfg); err != nil {
		return err
	}
	if httpLn != nil {
		n.serveHTTP(httpLn)
	}
	n.log.Info("flux service ready", "service", protocol.ServiceName, "version", Version,
		"node_id", cfg.NodeID, "subjects", protocol.SubjectCheck+", "+protocol.SubjectCheckBatch+", "+protocol.SubjectLimiters,
		"limiters", slices.Sorted(maps.Keys(cfg.Limiters)))
	return nil
}

// ClientURL returns the NATS URL clients use to reach this node: the
// embedded server's, or the configured NATS URL. It is "" before Start.
func (n *Node) ClientURL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.clientURL
}

// HTTPAddr returns the address the HTTP admin endpoints listen on
// ("" before Start or when they are off).
func (n *Node) HTTPAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.httpAddr
}

// Ready returns nil when the node answers requests: NATS connected, the
// service registered, the store (if any) answering and no shutdown begun.
// Otherwise it says why not.
func (n *Node) Ready() error {
	if n.draining.Load() {
		return errors.New("shutting down")
	}
	n.mu.Lock()
	nc, svc := n.nc, n.svc
	n.mu.Unlock()
	switch {
	case nc == nil || svc == nil:
		return errors.New("not started")
	case nc.Status() != nats.CONNECTED:
		return fmt.Errorf("NATS connection %s", nc.Status())
	case svc.stopped.Load():
		return errors.New("service stopped")
	}
	return n.storeReady()
}

// Reload applies a new configuration, as SIGHUP does: limiters whose
// parameters changed are re-based with Limiter.SetLimit (keys keep what
// they have used), new limiters are added and removed ones closed. A
// limiter whose algorithm changed cannot be re-based (the state of one
// algorithm means nothing to another): it is replaced by a new limiter, so
// its keys start afresh, and a warning says so. An invalid configuration
// is refused and the running one stays. Settings
// other than the limiters take effect only on restart; changes to them are
// logged and ignored.
func (n *Node) Reload(cfg Config) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-n.shutDone:
		return ErrShutdown
	default:
	}
	if n.draining.Load() {
		return ErrShutdown
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("flux-node: reload refused, keeping the running config: %w", err)
	}
	if cfg.NodeID == "" {
		cfg.NodeID = n.cfg.NodeID // generated at New
	}
	n.logIgnored(cfg)
	old := n.limiters.Load()
	next := &limiterSet{byName: make(map[string]*limiterEntry, len(cfg.Limiters))}
	var added []*limiterEntry
	fail := func(err error) error {
		for _, e := range added {
			e.lim.Close()
		}
		return fmt.Errorf("flux-node: reload refused, keeping the running config: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Limiters)) {
		lc := cfg.Limiters[name]
		if e := old.byName[name]; e != nil && e.cfg.AlgorithmName() == lc.AlgorithmName() && sameStoreSettings(e.cfg, lc) {
			next.byName[name] = e // re-based below if changed
			continue
		}
		e, err := n.newEntry(name, lc)
		if err != nil {
			return fail(err)
		}
		added = append(added, e)
		next.byName[name] = e
	}
	// Re-base changed limits. Validation passed, so SetLimit fails only if
	// the limiter is closing; a limiter that fails keeps its old entry.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	changed := 0
	limiters := maps.Clone(cfg.Limiters)
	for _, name := range slices.Sorted(maps.Keys(next.byName)) {
		e, lc := next.byName[name], cfg.Limiters[name]
		if slices.Contains(added, e) || e.cfg == lc {
			continue
		}
		lim, _ := lc.FluxLimit()
		if err := e.lim.SetLimit(ctx, lim); err != nil {
			errs = append(errs, fmt.Errorf("limiter %q keeps its old limit: %w", name, err))
			limiters[name] = e.cfg
			continue
		}
		next.byName[name] = &limiterEntry{name: name, cfg: lc, lim: e.lim, capacity: int64(e.lim.Limit().Capacity())}
		changed++
		n.log.Info("limiter changed", "limiter", name, "from", describe(e.cfg), "to", describe(lc))
	}
	if err := n.reloadCluster(ctx, cfg, next); err != nil {
		errs = append(errs, err)
	}
	next.encodeInfo()
	n.limiters.Store(next)
	replaced := 0
	for _, e := range added {
		n.met.Track(e.name, e.lim)
		if oe := old.byName[e.name]; oe != nil {
			replaced++
			if oe.cfg.AlgorithmName() != e.cfg.AlgorithmName() {
				// The state of one algorithm means nothing to another
				// (flux.ErrAlgorithmChange), so the limiter was replaced.
				n.log.Warn("limiter replaced: its algorithm changed, so every key starts afresh with a full allowance",
					"limiter", e.name, "from", describe(oe.cfg), "to", describe(e.cfg), "keys_dropped", oe.lim.Len())
			} else {
				n.log.Info("limiter replaced: its store settings changed", "limiter", e.name, "limit", describe(e.cfg))
			}
			continue
		}
		n.log.Info("limiter added", "limiter", e.name, "limit", describe(e.cfg))
	}
	for name, e := range old.byName {
		ne := next.byName[name]
		if ne != nil && ne.lim == e.lim {
			continue
		}
		if ne == nil {
			n.met.Untrack(name)
			n.log.Info("limiter removed", "limiter", name)
		}
		e.lim.Close()
	}
	n.cfg.Limiters = limiters
	n.log.Info("config reloaded", "limiters", len(next.byName), "added", len(added)-replaced, "changed", changed, "replaced", replaced)
	return errors.Join(errs...)
}

// logIgnored logs settings that differ from the running config but need a
// restart.
func (n *Node) logIgnored(cfg Config) {
	a, b := n.cfg, cfg
	a.Limiters, b.Limiters = nil, nil
	a.LogLevel, b.LogLevel = "", "" // applied by the caller's logger
	if !reflect.DeepEqual(a, b) {
		n.log.Warn("config reload: settings other than limiters and log_level take effect only after a restart")
	}
}

// describe is a limiter's algorithm and parameters for logs.
func describe(lc LimiterConfig) string {
	name := lc.AlgorithmName()
	switch {
	case !flux.Algorithm(name).Windowed():
		return fmt.Sprintf("%s rate=%g/s burst=%g", name, lc.Rate, lc.Burst)
	case lc.Calendar != "":
		return fmt.Sprintf("%s limit=%d calendar=%s timezone=%s", name, lc.Limit, lc.Calendar, zoneName(lc.Timezone))
	}
	return fmt.Sprintf("%s limit=%d window=%v", name, lc.Limit, lc.Window)
}

// Shutdown stops the node gracefully: it stops taking requests (draining
// the service's subscriptions), answers those in flight, then closes the
// limiters, the HTTP endpoints and the embedded server. If ctx ends before
// the drain completes (or after the config's DrainTimeout), requests still
// queued are dropped. Shutdown is idempotent: later calls wait for the
// first and return its result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutOnce.Do(func() {
		n.draining.Store(true)
		n.mu.Lock()
		defer n.mu.Unlock()
		n.shutErr = n.stopTransport(ctx)
		for _, e := range n.limiters.Load().byName {
			e.lim.Close()
			n.met.Untrack(e.name)
		}
		close(n.shutDone)
		n.log.Info("flux-node stopped")
	})
	select {
	case <-n.shutDone:
		return n.shutErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopTransport drains and closes the service and the NATS connection, then
// stops the HTTP endpoints and the embedded server. It is called on a
// failed Start and on Shutdown, and undoes only what is still running.
// n.mu is held.
func (n *Node) stopTransport(ctx context.Context) error {
	var errs []error
	drain := time.Duration(n.cfg.DrainTimeout)
	dctx, cancel := context.WithTimeout(ctx, drain)
	defer cancel()
	n.stopService(dctx)
	n.stopCluster()
	if n.nc != nil && !n.nc.IsClosed() {
		if err := n.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			n.nc.Close()
		}
		select {
		case <-n.ncClosed:
		case <-dctx.Done():
			n.log.Warn("drain did not finish in time; dropping requests still queued", "timeout", drain)
			n.nc.Close()
			<-n.ncClosed
		}
	}
	if n.httpSrv != nil {
		hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
		if err := n.httpSrv.Shutdown(hctx); err != nil {
			n.httpSrv.Close()
		}
		hcancel()
		n.wg.Wait()
		n.httpSrv = nil
	}
	if n.draining.Load() {
		// Shutdown: the limiters save what is dirty before the store (which
		// may live on the embedded server) closes (store.go).
		n.closeLimiters()
	}
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
	if n.dirLock != nil {
		n.dirLock.Close() // releases the lock
		n.dirLock = nil
	}
	return errors.Join(errs...)
}

// connect opens the node's own NATS connection.
func (n *Node) connect(ctx context.Context, cfg Config, url string) error {
	opts := []nats.Option{
		nats.Name("flux-node " + cfg.NodeID),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DrainTimeout(time.Duration(cfg.DrainTimeout)),
		nats.ClosedHandler(func(*nats.Conn) { close(n.ncClosed) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				n.log.Warn("NATS disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { n.log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(n.natsErrorHandler(newSlowLog(n.log))),
	}
	auth, err := n.nodeAuthOptions(cfg)
	if err != nil {
		return err
	}
	opts = append(opts, auth...)
	if d, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(d)))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		if cfg.NATSURL != "" {
			return fmt.Errorf("flux-node: connect to NATS at %s (--nats-url): %w", url, err)
		}
		return fmt.Errorf("flux-node: connect to the embedded NATS server at %s: %w", url, err)
	}
	n.nc, n.pub = nc, nc
	if cfg.NATSURL != "" && nc.MaxPayload() < int64(cfg.MaxPayload) {
		n.log.Warn("the NATS server's max_payload is below max_payload: larger requests are refused by NATS before they reach the node",
			"nats_max_payload", nc.MaxPayload(), "max_payload", cfg.MaxPayload)
	}
	n.log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted())
	return nil
}

// serveHTTP serves the admin endpoints on ln.
func (n *Node) serveHTTP(ln net.Listener) {
	n.httpSrv = &http.Server{Handler: n.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	n.httpAddr = ln.Addr().String()
	srv := n.httpSrv
	n.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("HTTP admin server failed", "error", err)
		}
	})
	n.log.Info("HTTP admin listening", "http_addr", n.httpAddr, "endpoints", "/healthz /readyz /metrics")
}

// GCPercent is the garbage collector's target (GOGC) flux-node runs with
// unless GOGC or GOMEMLIMIT is set: NATS allocates a little for every
// message while a node's live heap stays small, so Go's default (100)
// collects very often; 400 cut the CPU per single check by about a quarter
// in BenchmarkNATSCheck, at the cost of more heap headroom (bound it with
// GOMEMLIMIT).
const GCPercent = 400

// TuneGC sets the garbage collector's target to GCPercent, as flux-node
// does when it starts, unless the GOGC or GOMEMLIMIT environment variable
// is set; it reports whether it did. It changes a process-wide setting: a
// program that embeds a node calls it only if the node's traffic dominates
// the process.
func TuneGC() bool {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return false
	}
	debug.SetGCPercent(GCPercent)
	return true
}
