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
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
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
}

// Answer is a decision and where it came from.
type Answer struct {
	flux.Decision
	Path Path
}

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

	caughtUp, dropped atomic.Uint64
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

// fingerprint hashes the name, mode and limit (in its canonical form, see
// canonicalLimit) of every registered limiter.
func (c *Coordinator) fingerprint() uint64 {
	m := *c.entries.Load()
	h := fnv.New64a()
	for _, name := range slices.Sorted(maps.Keys(m)) {
		e := m[name]
		fmt.Fprintf(h, "%q %s %s\n", name, e.cfg.Mode, canonicalLimit(e.lim.Limit()))
	}
	return h.Sum64()
}

// Start joins the cluster: it listens on the bus, waits JoinWait for the
// peers to introduce themselves, asks them for the state of every
// non-local limiter (keeping, for each key, the state held by the peer
// that owned it), restores it, applies the gossip received meanwhile, and
// then announces this node as a member. Failing to reach a peer is not an
// error (the node starts with what it got); the error is the bus's, or
// ctx's, and the Coordinator must then be closed. Checks made before Start
// returns are decided locally.
func (c *Coordinator) Start(ctx context.Context) error {
	if !c.state.CompareAndSwap(stateNew, stateStarting) {
		if c.state.Load() == stateClosed {
			return ErrClosed
		}
		return ErrStarted
	}
	c.catchMu.Lock()
	c.catching = true
	c.catchMu.Unlock()
	if err := c.bus.Listen(handler{c}); err != nil {
		return err
	}
	if err := c.mem.Start(); err != nil {
		return err
	}
	t := time.NewTimer(c.cfg.JoinWait)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
	c.catchUp(ctx)
	c.endCatchUp()
	if err := c.mem.Activate(ctx); err != nil {
		return err
	}
	if !c.state.CompareAndSwap(stateStarting, stateRunning) {
		return ErrClosed
	}
	c.log.Info("flux cluster: joined", "node", c.self, "members", c.mem.View().Len())
	return nil
}

func (c *Coordinator) catchUp(ctx context.Context) {
	peers := c.mem.Peers()
	if len(peers) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CatchUpTimeout)
	defer cancel()
	for _, e := range *c.entries.Load() {
		if e.cfg.Mode == Local {
			continue
		}
		type reply struct {
			states []flux.KeyState
			err    error
		}
		replies := make([]reply, len(peers))
		var wg sync.WaitGroup
		for i, p := range peers {
			wg.Go(func() { replies[i].states, replies[i].err = c.bus.Sync(ctx, p, e.name) })
		}
		wg.Wait()
		var ok []string
		for i, r := range replies {
			if r.err != nil {
				c.log.Debug("flux cluster: catch-up from peer failed", "limiter", e.name, "peer", peers[i], "err", r.err)
				continue
			}
			ok = append(ok, peers[i])
		}
		// Each key's best state is the one of the peer that owned it.
		view := bus.NewView(ok...)
		var merged []flux.KeyState
		for i, r := range replies {
			for _, st := range r.states {
				if r.err == nil && view.Owner(st.Key) == peers[i] {
					merged = append(merged, st)
				}
			}
		}
		if len(merged) == 0 {
			continue
		}
		if err := e.lim.Restore(ctx, merged); err != nil {
			c.log.Debug("flux cluster: restore failed", "limiter", e.name, "err", err)
			continue
		}
		c.caughtUp.Add(uint64(len(merged)))
	}
}

// endCatchUp applies the gossip received while catching up. Admissions
// already in the restored state are counted twice: the error is on the
// side of denying.
func (c *Coordinator) endCatchUp() {
	c.catchMu.Lock()
	backlog := c.backlog
	c.backlog, c.backlogN, c.catching = nil, 0, false
	c.catchMu.Unlock()
	for _, u := range backlog {
		if e := c.lookup(u.Limiter); e != nil {
			c.apply(e, u.Items)
		}
	}
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

// Stats returns the Coordinator's counters.
func (c *Coordinator) Stats() Stats {
	st := Stats{
		Members:        c.Members(),
		Limiters:       make(map[string]LimiterStats),
		Membership:     c.mem.Stats(),
		Forwarder:      c.fwd.Stats(),
		CaughtUp:       c.caughtUp.Load(),
		UpdatesDropped: c.dropped.Load(),
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

// ---- suspicion: owners that failed to answer ----

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

// ---- checks ----

func (c *Coordinator) now() int64 {
	if t, err := c.clk.Now(); err == nil {
		return t
	}
	return time.Now().UnixNano()
}

// routed reports whether e's checks may go to an owner.
func (c *Coordinator) routed(e *entry) bool {
	return e.cfg.Mode >= Strict && c.state.Load() == stateRunning
}

// far reports whether, in hybrid mode, the local view p leaves enough of
// the key's capacity after a request of cost to decide locally.
func (e *entry) far(p flux.Decision, cost int) bool {
	left := p.Remaining - cost
	return left >= 0 && float64(left) >= e.cfg.HybridThreshold*float64(p.Limit)
}

// validate rejects what no node could decide, before anything is sent.
func (e *entry) validate(r *flux.Request) error {
	cost := charge(r)
	switch {
	case r.Key == "":
		return flux.ErrEmptyKey
	case r.Cost < 0 || (r.Peek && r.Cost != 0):
		return fmt.Errorf("%w: %d", flux.ErrInvalidCost, r.Cost)
	case cost > e.lim.Limit().Capacity():
		return fmt.Errorf("%w: cost %d, capacity %d", flux.ErrCostExceedsBurst, cost, e.lim.Limit().Capacity())
	}
	return nil
}

// charge is the cost r is decided with, as flux.Request defines it: 0 for
// a peek, 1 when Cost is unset.
func charge(r *flux.Request) int {
	switch {
	case r.Peek:
		return 0
	case r.Cost == 0:
		return 1
	}
	return r.Cost
}

// Check decides a request of cost for key under limiter name, according to
// the limiter's mode (cost 0 peeks). An error is for the request itself
// (an invalid key or cost, an unknown limiter, a closed limiter, ctx
// ending); an owner that does not answer is not an error but a fallback
// answer.
func (c *Coordinator) Check(ctx context.Context, limiter, key string, cost int) (Answer, error) {
	e, err := c.get(limiter)
	if err != nil {
		return Answer{}, err
	}
	if !c.routed(e) {
		return c.decide(ctx, e, key, cost, PathLocal)
	}
	owner := c.mem.Owner(key)
	if owner == c.self || owner == "" {
		return c.decide(ctx, e, key, cost, PathLocal)
	}
	if err := e.validate(&flux.Request{Key: key, Cost: cost, Peek: cost == 0}); err != nil {
		return Answer{}, err
	}
	if e.cfg.Mode == Hybrid {
		p, err := e.lim.Peek(ctx, key)
		if err != nil {
			return Answer{}, err
		}
		if e.far(p, cost) {
			return c.decide(ctx, e, key, cost, PathLocal)
		}
	}
	if c.suspected(owner) {
		return c.fallback(ctx, e, key, cost)
	}
	wctx, cancel := context.WithTimeout(ctx, e.cfg.OwnerDeadline)
	defer cancel()
	res, err := c.fwd.Ask(wctx, owner, bus.Check{Limiter: e.name, Key: key, Cost: cost}, e.cfg.OwnerDeadline)
	if err == nil && res.Err == nil {
		e.answers[PathOwner].Add(1)
		return Answer{Decision: res.Decision, Path: PathOwner}, nil
	}
	if err == nil && passThrough(res.Err) {
		return Answer{}, res.Err
	}
	if ctx.Err() != nil {
		return Answer{}, ctx.Err()
	}
	c.ownerFailed(owner, err, res.Err)
	return c.fallback(ctx, e, key, cost)
}

// passThrough reports whether an owner's error belongs to the request (it
// would fail on any node) rather than to the owner.
func passThrough(err error) bool {
	return errors.Is(err, flux.ErrEmptyKey) || errors.Is(err, flux.ErrKeyTooLong) ||
		errors.Is(err, flux.ErrInvalidCost) || errors.Is(err, flux.ErrCostExceedsBurst) ||
		errors.Is(err, flux.ErrFull)
}

// ownerFailed notes a forward that failed: a transport failure makes the
// owner suspect; an owner that answered with an error is not.
func (c *Coordinator) ownerFailed(owner string, transport, remote error) {
	if transport != nil {
		c.suspect(owner)
		c.log.Debug("flux cluster: owner did not answer", "owner", owner, "err", transport)
		return
	}
	c.log.Debug("flux cluster: owner failed", "owner", owner, "err", remote)
}

// decide decides locally and gossips what it admits.
func (c *Coordinator) decide(ctx context.Context, e *entry, key string, cost int, path Path) (Answer, error) {
	d, err := e.lim.CheckN(ctx, key, cost)
	if err != nil {
		return Answer{}, err
	}
	if d.Allowed && cost > 0 && e.g != nil {
		e.g.add(key, c.now(), cost)
	}
	e.answers[path].Add(1)
	return Answer{Decision: d, Path: path}, nil
}

// fallback answers by the failure policy.
func (c *Coordinator) fallback(ctx context.Context, e *entry, key string, cost int) (Answer, error) {
	switch e.cfg.OnOwnerFailure {
	case FailOpen, FailClosed:
		e.answers[PathFallback].Add(1)
		return Answer{Decision: e.policyDecision(), Path: PathFallback}, nil
	}
	return c.decide(ctx, e, key, cost, PathFallback)
}

// policyDecision is the answer of the open and closed policies.
func (e *entry) policyDecision() flux.Decision {
	capacity := e.lim.Limit().Capacity()
	if e.cfg.OnOwnerFailure == FailOpen {
		return flux.Decision{Allowed: true, Limit: capacity}
	}
	return flux.Decision{Limit: capacity, RetryAfter: e.cfg.OwnerDeadline}
}

// CheckBatch decides reqs under limiter name: out[i] answers reqs[i], or
// itemErrs[i] says why it could not be decided (as with
// flux.Limiter.CheckBatchEach, but an invalid item does not stop the
// others). Items decided locally go to the limiter in one batch; items
// owned elsewhere are forwarded together and waited for together. The
// returned error is for the batch as a whole (ctx, a closed limiter).
// itemErrs must be zero on entry.
func (c *Coordinator) CheckBatch(ctx context.Context, limiter string, reqs []flux.Request, out []Answer, itemErrs []error) error {
	if len(out) < len(reqs) || len(itemErrs) < len(reqs) {
		return fmt.Errorf("%w: out and itemErrs have room for %d and %d items, reqs has %d", ErrInvalidConfig, len(out), len(itemErrs), len(reqs))
	}
	e, err := c.get(limiter)
	if err != nil {
		return err
	}
	valid := make([]int, 0, len(reqs))
	for i := range reqs {
		if err := e.validate(&reqs[i]); err != nil {
			itemErrs[i] = err
			continue
		}
		valid = append(valid, i)
	}
	if !c.routed(e) {
		return c.decideSome(ctx, e, reqs, valid, out, itemErrs, PathLocal)
	}
	var peeks []flux.Decision
	if e.cfg.Mode == Hybrid {
		peeks = make([]flux.Decision, len(reqs))
		pr := make([]flux.Request, len(valid))
		pd := make([]flux.Decision, len(valid))
		pe := make([]error, len(valid))
		for j, i := range valid {
			pr[j] = flux.Request{Key: reqs[i].Key, Peek: true}
		}
		if err := checkEach(ctx, e.lim, pr, pd, pe); err != nil {
			return err
		}
		for j, i := range valid {
			peeks[i] = pd[j] // a failed peek leaves a zero Decision: not far, ask the owner
		}
	}
	view := c.mem.View()
	var local, fallback, remote []int
	var owners []string
	var calls []*bus.Call
	var taken map[string]int // hybrid: cost already decided locally per key in this batch
	for _, i := range valid {
		r := &reqs[i]
		owner := view.Owner(r.Key)
		switch {
		case owner == c.self || owner == "":
			local = append(local, i)
		case peeks != nil && e.far(peeks[i], charge(r)+taken[r.Key]):
			if taken == nil {
				taken = make(map[string]int)
			}
			taken[r.Key] += charge(r)
			local = append(local, i)
		case c.suspected(owner):
			fallback = append(fallback, i)
		default:
			remote = append(remote, i)
			owners = append(owners, owner)
			calls = append(calls, c.fwd.Enqueue(owner, bus.Check{Limiter: e.name, Key: r.Key, Cost: charge(r)}, e.cfg.OwnerDeadline))
		}
	}
	if err := c.decideSome(ctx, e, reqs, local, out, itemErrs, PathLocal); err != nil {
		return err
	}
	if len(calls) > 0 {
		wctx, cancel := context.WithTimeout(ctx, e.cfg.OwnerDeadline)
		for j, call := range calls {
			i := remote[j]
			res, err := call.Wait(wctx)
			switch {
			case err == nil && res.Err == nil:
				out[i] = Answer{Decision: res.Decision, Path: PathOwner}
				e.answers[PathOwner].Add(1)
			case err == nil && passThrough(res.Err):
				itemErrs[i] = res.Err
			case ctx.Err() != nil:
				cancel()
				return ctx.Err()
			default:
				c.ownerFailed(owners[j], err, res.Err)
				fallback = append(fallback, i)
			}
		}
		cancel()
	}
	if len(fallback) == 0 {
		return nil
	}
	if e.cfg.OnOwnerFailure != FailLocal {
		d := e.policyDecision()
		for _, i := range fallback {
			out[i] = Answer{Decision: d, Path: PathFallback}
		}
		e.answers[PathFallback].Add(uint64(len(fallback)))
		return nil
	}
	slices.Sort(fallback)
	return c.decideSome(ctx, e, reqs, fallback, out, itemErrs, PathFallback)
}

// pathServed marks decisions made for a peer: they are counted in
// LimiterStats.Served, not in Answers.
const pathServed = numPaths

// decideSome decides reqs[i] for each i of idx locally, in one batch, and
// gossips what it admits.
func (c *Coordinator) decideSome(ctx context.Context, e *entry, reqs []flux.Request, idx []int, out []Answer, itemErrs []error, path Path) error {
	if len(idx) == 0 {
		return nil
	}
	sub := make([]flux.Request, len(idx))
	for j, i := range idx {
		sub[j] = reqs[i]
	}
	ds := make([]flux.Decision, len(idx))
	errs := make([]error, len(idx))
	if err := checkEach(ctx, e.lim, sub, ds, errs); err != nil {
		return err
	}
	now := c.now()
	n := 0
	for j, i := range idx {
		if errs[j] != nil {
			itemErrs[i] = errs[j]
			continue
		}
		n++
		out[i] = Answer{Decision: ds[j], Path: path}
		if cost := charge(&sub[j]); ds[j].Allowed && cost > 0 && e.g != nil {
			e.g.add(sub[j].Key, now, cost)
		}
	}
	if path == pathServed {
		e.served.Add(uint64(n))
	} else {
		e.answers[path].Add(uint64(n))
	}
	return nil
}

// checkEach is CheckBatchEach that, when an item is invalid (the limiter
// then applies nothing), reports that item in errs and decides the others.
func checkEach(ctx context.Context, l *flux.Limiter, reqs []flux.Request, out []flux.Decision, errs []error) error {
	err := l.CheckBatchEach(ctx, reqs, out, errs)
	var be *flux.BatchError
	if !errors.As(err, &be) || be.Index < 0 || be.Index >= len(reqs) {
		return err
	}
	errs[be.Index] = be.Err
	rest := make([]int, 0, len(reqs)-1)
	for i := range reqs {
		if i != be.Index {
			rest = append(rest, i)
		}
	}
	sub := make([]flux.Request, len(rest))
	for j, i := range rest {
		sub[j] = reqs[i]
	}
	sd := make([]flux.Decision, len(rest))
	se := make([]error, len(rest))
	if err := checkEach(ctx, l, sub, sd, se); err != nil {
		return err
	}
	for j, i := range rest {
		out[i], errs[i] = sd[j], se[j]
	}
	return nil
}

// ---- what the bus delivers ----

// handler is the Coordinator's bus.Handler.
type handler struct{ c *Coordinator }

func (h handler) HandleHeartbeat(hb bus.Heartbeat) { h.c.mem.Observe(hb) }

func (h handler) HandleUpdates(from string, u bus.Updates) {
	c := h.c
	e := c.lookup(u.Limiter)
	if e == nil || e.cfg.Mode == Local || c.state.Load() == stateClosed {
		c.dropped.Add(uint64(len(u.Items)))
		return
	}
	c.catchMu.Lock()
	if c.catching {
		if c.backlogN+len(u.Items) <= maxBacklog {
			c.backlog = append(c.backlog, u)
			c.backlogN += len(u.Items)
		} else {
			c.dropped.Add(uint64(len(u.Items)))
		}
		c.catchMu.Unlock()
		return
	}
	c.catchMu.Unlock()
	c.apply(e, u.Items)
}

// apply adds peers' admissions to e's limiter. An item the limiter
// rejects (a key too long for it) is dropped and counted; the others are
// applied.
func (c *Coordinator) apply(e *entry, items []flux.Update) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for len(items) > 0 {
		err := e.lim.Apply(ctx, items)
		var be *flux.BatchError
		if errors.As(err, &be) && be.Index >= 0 && be.Index < len(items) {
			c.dropped.Add(1)
			items = slices.Delete(items, be.Index, be.Index+1)
			continue
		}
		if err != nil {
			c.dropped.Add(1)
			c.log.Debug("flux cluster: applying updates failed", "limiter", e.name, "err", err)
		}
		e.applied.Add(uint64(len(items)))
		return
	}
}

// HandleForward decides checks forwarded by a peer that takes this node
// for their owner. It decides even if its own view names another owner:
// views differ only while membership changes, and refusing would only add
// a fallback.
func (h handler) HandleForward(ctx context.Context, from string, checks []bus.Check, out []bus.Result) {
	c := h.c
	reqs := make([]flux.Request, len(checks))
	groups := make(map[string][]int, 1) // by limiter, each in order
	for i := range checks {
		// On the bus a cost of 0 is a peek.
		reqs[i] = flux.Request{Key: checks[i].Key, Cost: checks[i].Cost, Peek: checks[i].Cost == 0}
		groups[checks[i].Limiter] = append(groups[checks[i].Limiter], i)
	}
	answers := make([]Answer, len(checks))
	errs := make([]error, len(checks))
	for name, idx := range groups {
		e, err := c.get(name)
		if err != nil {
			for _, i := range idx {
				errs[i] = err
			}
			continue
		}
		valid := idx[:0]
		for _, i := range idx {
			if err := e.validate(&reqs[i]); err != nil {
				errs[i] = err
				continue
			}
			valid = append(valid, i)
		}
		if err := c.decideSome(ctx, e, reqs, valid, answers, errs, pathServed); err != nil {
			for _, i := range valid {
				errs[i] = err
			}
		}
	}
	for i := range out {
		out[i] = bus.Result{Decision: answers[i].Decision, Err: errs[i]}
	}
}

func (h handler) HandleSync(ctx context.Context, from, limiter string) ([]flux.KeyState, error) {
	e, err := h.c.get(limiter)
	if err != nil {
		return nil, err
	}
	return e.lim.Snapshot(ctx)
}
