// Package cluster makes several Flux nodes enforce one limit together. A
// Coordinator sits in front of a node's limiters (one *flux.Limiter per
// limiter name) and, per limiter, applies one of four modes over a
// bus.Bus: Local, BestEffort (gossip), Strict (the key's owner decides)
// and Hybrid (local far from the limit, the owner near it). Every answer
// says where it came from (Path), which flux-node exports as
// flux_cluster_answers_total{limiter,path}.
//
// docs/CLUSTER.md states the guarantee of each mode, what can be
// over-admitted while membership changes, and the wire format.
package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	flux "github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
	"github.com/fluxlimiter/flux/clock"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrInvalidConfig: a Config or LimiterConfig field is unusable.
	ErrInvalidConfig = errors.New("cluster: invalid configuration")
	// ErrUnknownLimiter: no limiter of that name is registered (here, or
	// on the owner a check was forwarded to).
	ErrUnknownLimiter = bus.ErrUnknownLimiter
	// ErrClosed: the Coordinator has been closed.
	ErrClosed = errors.New("cluster: coordinator closed")
	// ErrStarted: Start was called twice.
	ErrStarted = errors.New("cluster: coordinator already started")
)

// Defaults of Config.
const (
	// DefaultJoinWait is how long a starting node listens for its peers'
	// heartbeats before it asks them for state. Active peers answer a
	// joining node's heartbeat at once, so this only has to cover a round
	// trip.
	DefaultJoinWait = 200 * time.Millisecond
	// DefaultCatchUpTimeout bounds the whole catch-up.
	DefaultCatchUpTimeout = 5 * time.Second
	// maxBacklog bounds the updates kept while catching up.
	maxBacklog = 1 << 20
)

// Config sets up a Coordinator. Zero fields take the defaults.
type Config struct {
	// Heartbeat is the heartbeat interval (bus.DefaultHeartbeat, 1s).
	Heartbeat time.Duration
	// Misses is how many heartbeats a peer may miss before it is dropped
	// (bus.DefaultMisses, 3).
	Misses int
	// JoinWait and CatchUpTimeout shape Start (DefaultJoinWait,
	// DefaultCatchUpTimeout).
	JoinWait       time.Duration
	CatchUpTimeout time.Duration
	// ForwardDelay and ForwardBatch shape the coalescing of forwarded
	// checks (bus.DefaultForwardDelay, bus.DefaultForwardBatch).
	ForwardDelay time.Duration
	ForwardBatch int
	// Fingerprint returns the configuration fingerprint heartbeats carry.
	// By default it hashes the name, mode and limit of every registered
	// limiter, so two nodes with the same limiters agree.
	Fingerprint func() uint64
	// Clock stamps the admissions this node gossips; give it the clock
	// the limiters use (default: a clock.System).
	Clock clock.Clock
	// Logger receives membership changes (Info) and failures (Debug).
	// Default: none.
	Logger *slog.Logger
	// OnEvent, if set, is told about every membership change, from the
	// membership's goroutine (see bus.MembershipConfig.OnEvent).
	OnEvent func(bus.Event)
	// MaxClockSkew bounds how far ahead of this node's clock a peer's
	// admission may be stamped (bus.DefaultMaxSkew, 10s); later ones are
	// refused (Stats.UpdatesRefused): one forged or skewed update must
	// not deny a key for years.
	MaxClockSkew time.Duration
}

const (
	stateNew int32 = iota
	stateStarting
	stateRunning
	stateClosed
)

// Coordinator runs a node's side of the cluster. Its methods are safe for
// simultaneous use.
//
// Create it with New, Register the limiters, then Start: Start listens on
// the bus, asks the peers for the state of recent keys, and only then
// announces the node as a member (so it never owns keys it knows nothing
// about). Close leaves the cluster. The Coordinator owns the Bus (Close
// closes it) but not the limiters.
type Coordinator struct {
	bus  bus.Bus
	self string
	cfg  Config
	log  *slog.Logger
	clk  clock.Clock
	fwd  *bus.Forwarder
	mem  *bus.Membership

	regMu   sync.Mutex                        // one Register/Unregister at a time
	entries atomic.Pointer[map[string]*entry] // copy on write

	state atomic.Int32

	catchMu  sync.Mutex
	catching bool
	backlog  []bus.Updates
	backlogN int

	susMu sync.Mutex
	sus   map[string]time.Time // owner → when a forward to it failed
	nsus  atomic.Int32

	closeOnce sync.Once

	caughtUp, dropped, refused, clamped atomic.Uint64
}

type entry struct {
	name    string
	lim     *flux.Limiter
	cfg     LimiterConfig
	g       *gossiper // nil in Local mode
	answers [numPaths]atomic.Uint64
	served  atomic.Uint64 // checks decided for peers (as their owner)
	applied atomic.Uint64
}

// New returns a Coordinator over b. It starts nothing; see Start.
func New(b bus.Bus, cfg Config) (*Coordinator, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil bus", ErrInvalidConfig)
	}
	if cfg.JoinWait < 0 || cfg.CatchUpTimeout < 0 {
		return nil, fmt.Errorf("%w: negative join wait or catch-up timeout", ErrInvalidConfig)
	}
	if cfg.MaxClockSkew < 0 {
		return nil, fmt.Errorf("%w: negative MaxClockSkew", ErrInvalidConfig)
	}
	if cfg.MaxClockSkew == 0 {
		cfg.MaxClockSkew = bus.DefaultMaxSkew
	}
	if cfg.JoinWait == 0 {
		cfg.JoinWait = DefaultJoinWait
	}
	if cfg.CatchUpTimeout == 0 {
		cfg.CatchUpTimeout = DefaultCatchUpTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.NewSystem()
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	fwd, err := bus.NewForwarder(b, bus.ForwarderConfig{Delay: cfg.ForwardDelay, MaxBatch: cfg.ForwardBatch})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	c := &Coordinator{bus: b, self: b.Node(), cfg: cfg, log: lg, clk: cfg.Clock, fwd: fwd, sus: make(map[string]time.Time)}
	fp := cfg.Fingerprint
	if fp == nil {
		fp = c.fingerprint
	}
	c.mem, err = bus.NewMembership(b, bus.MembershipConfig{
		Interval: cfg.Heartbeat, Misses: cfg.Misses, Fingerprint: fp, OnEvent: c.onEvent, Logger: lg,
	})
	if err != nil {
		_ = fwd.Close()
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	c.entries.Store(&map[string]*entry{})
	return c, nil
}

// Node returns this node's id.
func (c *Coordinator) Node() string { return c.self }

// Register adds limiter name, or replaces its registration (a reload that
// changes its mode or its *flux.Limiter): the previous registration's
// pending gossip is published first and its counters carry over.
// Limiters registered before Start are caught up from the peers.
func (c *Coordinator) Register(name string, l *flux.Limiter, lc LimiterConfig) error {
	if name == "" || l == nil {
		return fmt.Errorf("%w: limiter name %q, limiter %v", ErrInvalidConfig, name, l)
	}
	if err := lc.setDefaults(); err != nil {
		return err
	}
	c.regMu.Lock()
	defer c.regMu.Unlock()
	if c.state.Load() == stateClosed {
		return ErrClosed
	}
	e := &entry{name: name, lim: l, cfg: lc}
	if lc.Mode != Local {
		e.g = newGossiper(c.bus, name, lc)
	}
	old := *c.entries.Load()
	if prev := old[name]; prev != nil {
		for i := range e.answers {
			e.answers[i].Store(prev.answers[i].Load())
		}
		e.applied.Store(prev.applied.Load())
		e.served.Store(prev.served.Load())
	}
	next := maps.Clone(old)
	next[name] = e
	c.entries.Store(&next)
	if prev := old[name]; prev != nil && prev.g != nil {
		prev.g.stop()
	}
	return nil
}

// Unregister removes limiter name, publishing its pending gossip first.
func (c *Coordinator) Unregister(name string) {
	c.regMu.Lock()
	defer c.regMu.Unlock()
	old := *c.entries.Load()
	prev, ok := old[name]
	if !ok {
		return
	}
	next := maps.Clone(old)
	delete(next, name)
	c.entries.Store(&next)
	if prev.g != nil {
		prev.g.stop()
	}
}

func (c *Coordinator) lookup(name string) *entry { return (*c.entries.Load())[name] }

func (c *Coordinator) get(name string) (*entry, error) {
	if c.state.Load() == stateClosed {
		return nil, ErrClosed
	}
	e := c.lookup(name)
	if e == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownLimiter, name)
	}
	return e, nil
}

// Members returns the number of live members, this node included: the
// gauge flux_cluster_members.
func (c *Coordinator) Members() int {
	if c.state.Load() != stateRunning {
		return len(c.mem.Peers()) + 1
	}
	return c.mem.View().Len()
}

// View returns the current members.
func (c *Coordinator) View() *bus.View { return c.mem.View() }

// Close leaves the cluster and waits for every goroutine the Coordinator
// started. It publishes the pending gossip, announces that the node leaves
// (peers drop it at once and move its keys to their new owners, whose
// replicas are then current), stops answering, publishes what it admitted
// meanwhile, fails forwarded checks in flight and closes the bus. It is
// idempotent. The limiters stay open.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() {
		c.regMu.Lock()
		defer c.regMu.Unlock()
		entries := *c.entries.Load()
		for _, e := range entries {
			if e.g != nil {
				e.g.flush()
			}
		}
		_ = c.mem.Close()
		c.state.Store(stateClosed)
		for _, e := range entries {
			if e.g != nil {
				e.g.stop()
			}
		}
		_ = c.fwd.Close()
		_ = c.bus.Close()
	})
	return nil
}

func (c *Coordinator) onEvent(ev bus.Event) {
	switch ev.Kind {
	case bus.Left, bus.TimedOut:
		c.unsuspect(ev.Node)
		c.log.Info("flux cluster: member "+ev.Kind.String(), "node", ev.Node, "members", ev.Members)
	case bus.Joined:
		c.log.Info("flux cluster: member joined", "node", ev.Node, "members", ev.Members)
	case bus.Mismatch:
		c.log.Warn("flux cluster: configuration fingerprint differs", "node", ev.Node, "theirs", ev.Theirs, "ours", ev.Ours)
	}
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(ev)
	}
}
