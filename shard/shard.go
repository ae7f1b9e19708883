// Package shard is the shard actor: one goroutine that owns the state of
// every key hashed to it in a hash table of its own (no locks, no atomics
// on the state; see table.go) and answers checks, batches, peeks, remote
// admissions, limit changes, cleanups and snapshots sent over its mailbox.
//
// Stale keys are swept incrementally: every sweep tick visits at most a fixed
// number of keys, resuming where the previous tick stopped, so no tick pauses
// the shard for a time proportional to the number of keys. A memory cap
// (MaxKeys) makes room for a new key only by evicting keys whose state equals
// a fresh key; when none can be found the new key is refused with an error
// wrapping flux.ErrFull, so no throttled key is ever forgiven by eviction.
package shard

import (
	"context"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/fluxlimiter/flux/actor"
	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/internal/errs"
)

// Defaults for Config fields left zero.
const (
	DefaultMailbox     = 1024
	DefaultSweepEvery  = time.Second
	DefaultSweepBudget = 1024
	DefaultEvictBudget = 256
	DefaultCleanBudget = 4096
)

// compactBudget is how many mostly empty subtables of the key table a sweep
// tick or cleanup step rebuilds smaller (table.compact): each moves at most
// maxTableSlots entries.
const compactBudget = 16

// Config sets up a shard.
type Config[S any] struct {
	ID        int
	Algorithm algorithm.Algorithm[S]
	Clock     clock.Clock
	// Mailbox is the mailbox capacity (DefaultMailbox if zero).
	Mailbox int
	// MaxWait bounds a send's wait for room in a full mailbox (0: the
	// caller's context only).
	MaxWait time.Duration
	// MaxKeys caps the keys held (0: no cap).
	MaxKeys int
	// SweepEvery is the sweep period (DefaultSweepEvery if zero, no sweep if
	// negative); SweepBudget the keys visited per tick.
	SweepEvery  time.Duration
	SweepBudget int
	// EvictBudget is how many keys an insert into a full shard may visit
	// looking for idle keys to evict.
	EvictBudget int
	// OnPanic is told about recovered panics.
	OnPanic func(v any)
	// Persistence, if set, keeps the keys' states in a store.
	Persistence *Persistence
}

// Stats are a shard's counters, read without messaging the shard.
type Stats struct {
	Keys      int    // keys held
	Mailbox   int    // messages waiting
	Evicted   uint64 // idle keys evicted to make room under MaxKeys
	Swept     uint64 // idle keys removed by the background sweep
	Refused   uint64 // new keys refused because the shard was full
	Panics    uint64 // handler panics contained
	ClockErrs uint64 // clock failures
}

// Shard is one shard actor. Its exported methods are safe for simultaneous
// use; the state they reach is touched only by the shard's goroutine.
type Shard[S any] struct {
	id      int
	clk     clock.Clock
	alg     algorithm.Algorithm[S]   // owned by the shard goroutine
	cap     int64                    // alg.Capacity(), cached off the hot path
	into    algorithm.StepperInto[S] // alg's StepInto, if it has one
	gcra    *algorithm.GCRA          // alg if it is GCRA (then S is int64): the hot path calls it directly
	scratch algorithm.Decision       // single checks decide into it
	m       *table[S]                // owned by the shard goroutine; states inline, updated in place
	maxKeys int
	evictN  int
	// prefetchMin is prefetchMinKeys when the shard started.
	prefetchMin int
	sweepN      int

	sweep cursor[S] // background sweep position
	clean cursor[S] // explicit Cleanup position

	keys      atomic.Int64
	evicted   atomic.Uint64
	swept     atomic.Uint64
	refused   atomic.Uint64
	panics    atomic.Uint64
	clockErrs atomic.Uint64

	replies sync.Pool // chan Reply

	p *persist[S] // nil without a store
	// fresh holds the keys dropped while they equalled a fresh key (see
	// Persistence.Remember and RememberFresh); nil if none are kept.
	fresh   *remembered
	changed bool // the last checkKeyStored changed its key's state

	act *actor.Actor[Msg[S]]
}

// New starts a shard. The caller owns it and must call Stop.
func New[S any](cfg Config[S]) *Shard[S] {
	if cfg.Mailbox == 0 {
		cfg.Mailbox = DefaultMailbox
	}
	if cfg.SweepEvery == 0 {
		cfg.SweepEvery = DefaultSweepEvery
	}
	if cfg.SweepBudget <= 0 {
		cfg.SweepBudget = DefaultSweepBudget
	}
	if cfg.EvictBudget <= 0 {
		cfg.EvictBudget = DefaultEvictBudget
	}
	into, _ := cfg.Algorithm.(algorithm.StepperInto[S])
	s := &Shard[S]{
		into:        into,
		gcra:        gcraOf(cfg.Algorithm),
		id:          cfg.ID,
		clk:         cfg.Clock,
		alg:         cfg.Algorithm,
		cap:         cfg.Algorithm.Capacity(),
		m:           newTable[S](maphash.MakeSeed()),
		maxKeys:     cfg.MaxKeys,
		prefetchMin: prefetchMinKeys,
		evictN:      cfg.EvictBudget,
		sweepN:      cfg.SweepBudget,
	}
	s.replies.New = newReplyChan
	if cfg.Persistence != nil && cfg.Persistence.Store != nil {
		s.p = newPersist[S](*cfg.Persistence)
		if n := s.p.cfg.Remember; s.p.cfg.OnFailure != FailClosed && n >= 0 {
			if n == 0 {
				n = DefaultRemember
			}
			s.fresh = newRemembered(n)
		}
	}
	// The handler is chosen once: with a store every path goes through
	// persist.go, without one none tests for it.
	handle := s.handle
	if s.p != nil {
		handle = s.handleStored
	}
	ac := actor.Config[Msg[S]]{
		Mailbox: cfg.Mailbox,
		MaxWait: cfg.MaxWait,
		Handle:  handle,
		OnStop: func() {
			s.sweep.reset()
			s.clean.reset()
			if s.p != nil {
				s.stopPersist()
			}
		},
		OnPanic: func(v any) {
			s.panics.Add(1)
			if cfg.OnPanic != nil {
				cfg.OnPanic(v)
			}
		},
	}
	if cfg.SweepEvery > 0 {
		ac.Timers = append(ac.Timers, actor.Timer{Every: cfg.SweepEvery, Do: s.sweepTick})
	}
	if s.p != nil {
		ac.Timers = append(ac.Timers, actor.Timer{Every: s.p.cfg.FlushEvery, Do: s.flushTick})
	}
	s.act = actor.Start(ac)
	return s
}

// Stop stops the shard and waits for its goroutine. Idempotent.
func (s *Shard[S]) Stop() { s.act.Stop() }

// Stats returns the shard's counters.
func (s *Shard[S]) Stats() Stats {
	return Stats{
		Keys:      int(s.keys.Load()),
		Mailbox:   s.act.Len(),
		Evicted:   s.evicted.Load(),
		Swept:     s.swept.Load(),
		Refused:   s.refused.Load(),
		Panics:    s.panics.Load(),
		ClockErrs: s.clockErrs.Load(),
	}
}

// Len reports the number of keys held, as of the last message handled.
func (s *Shard[S]) Len() int { return int(s.keys.Load()) }

// kinds of message
const (
	kCheck uint8 = iota + 1
	kBatch
	kApply
	kControl
	kLoaded  // a loader's result
	kFlushed // a flusher's result
)

// Msg is a shard message: one mailbox carries every kind, so they are
// handled in the order they were sent.
type Msg[S any] struct {
	kind  uint8
	key   string
	cost  int64
	reply chan Reply
	batch *Batch
	ctrl  *control[S]
	// results of the shard's own store helpers
	loaded  *loaded
	flushed *flushed
}

// Fail answers the message's sender with err without blocking.
func (m Msg[S]) Fail(err error) {
	switch {
	case m.reply != nil:
		select {
		case m.reply <- Reply{Err: err}:
		default:
		}
	case m.batch != nil:
		m.batch.Err = err
		select {
		case m.batch.Done <- m.batch:
		default:
		}
	case m.ctrl != nil:
		m.ctrl.err = err
		select {
		case m.ctrl.done <- struct{}{}:
		default:
		}
	}
}

// Reply answers a single check.
type Reply struct {
	D   algorithm.Decision
	Err error
}

// newReplyChan makes the pooled reply channels. Each shard has its own pool
// (not a global one) so that channels never cross testing/synctest bubbles:
// a shard created in a bubble is only used from it.
func newReplyChan() any { return make(chan Reply, 1) }

// Item is one request of a batch: a check of Cost for Key, or, in an apply
// batch, an admission of Cost made elsewhere at At.
type Item struct {
	Key  string
	Cost int64
	At   int64
}

// Request is one check of a batch: Cost for Key, where an unset Cost (0)
// means 1 and Peek asks for the decision of a cost-0 check. A forgotten
// field must never turn a check into a peek, so peeking is spelled out.
// flux.Request has the same fields (the root converts its caller's slice
// to this type in place, so a batch reaches the shards without a copy).
type Request struct {
	Key  string
	Cost int
	Peek bool
}

// cost returns the cost the request is decided with.
func (r *Request) cost() int64 {
	switch {
	case r.Peek:
		return 0
	case r.Cost == 0:
		return 1
	}
	return int64(r.Cost)
}

// Batch is one shard's part of a batch. Its items are Reqs[Sel[j]] for
// each j (all of Reqs, in order, if Sel is nil) for checks, and Items for
// admissions made elsewhere (SendApply). The shard decides item j in order
// and writes its decision to Out[Idx[j]] (to Out[j] if Idx is nil). An item
// that cannot be decided gets its error in Errs[j] (the shard allocates
// Errs on the first such error); Err is set if the whole part failed. Then
// the shard sends the batch on Done, which must have room for it.
type Batch struct {
	Reqs  []Request
	Sel   []int32
	Items []Item
	Out   []algorithm.Decision
	Idx   []int32
	Errs  []error
	Err   error
	Done  chan *Batch

	parked int  // items waiting for a load (shard-owned while in flight)
	flush  bool // an item changed state: under write-through, answer after the save
}

// Len returns the number of items in b.
func (b *Batch) Len() int {
	switch {
	case b.Sel != nil:
		return len(b.Sel)
	case b.Reqs != nil:
		return len(b.Reqs)
	}
	return len(b.Items)
}

// item returns item j's key and cost.
func (b *Batch) item(j int) (string, int64) {
	switch {
	case b.Sel != nil:
		r := &b.Reqs[b.Sel[j]]
		return r.Key, r.cost()
	case b.Reqs != nil:
		r := &b.Reqs[j]
		return r.Key, r.cost()
	}
	it := &b.Items[j]
	return it.Key, it.Cost
}

// out returns where item j's decision goes.
func (b *Batch) out(j int) *algorithm.Decision {
	if b.Idx != nil {
		return &b.Out[b.Idx[j]]
	}
	return &b.Out[j]
}

// Check decides one request of cost for key. Cost 0 peeks.
func (s *Shard[S]) Check(ctx context.Context, key string, cost int64) (algorithm.Decision, error) {
	rc := s.replies.Get().(chan Reply)
	if err := s.act.Send(ctx, Msg[S]{kind: kCheck, key: key, cost: cost, reply: rc}); err != nil {
		s.replies.Put(rc)
		return algorithm.Decision{}, err
	}
	done := ctx.Done()
	if done == nil { // a context that never ends: a plain receive is cheapest
		r := <-rc
		s.replies.Put(rc)
		return r.D, r.Err
	}
	select {
	case r := <-rc:
		s.replies.Put(rc)
		return r.D, r.Err
	case <-done:
		// The shard will still answer; rc is abandoned, not pooled.
		return algorithm.Decision{}, ctx.Err()
	}
}

// CheckAsync sends a check and returns the channel its reply will arrive on
// (buffered 1). The caller waits on it together with Done.
func (s *Shard[S]) CheckAsync(ctx context.Context, key string, cost int64) (chan Reply, error) {
	rc := make(chan Reply, 1)
	if err := s.act.Send(ctx, Msg[S]{kind: kCheck, key: key, cost: cost, reply: rc}); err != nil {
		return nil, err
	}
	return rc, nil
}

// Done is closed once the shard's goroutine has exited.
func (s *Shard[S]) Done() <-chan struct{} { return s.act.Done() }

// SendBatch sends b: a batch of checks. The reply arrives on b.Done.
func (s *Shard[S]) SendBatch(ctx context.Context, b *Batch) error {
	return s.act.Send(ctx, Msg[S]{kind: kBatch, batch: b})
}

// SendApply sends b: a batch of admissions made elsewhere, applied without
// deciding. The reply arrives on b.Done.
func (s *Shard[S]) SendApply(ctx context.Context, b *Batch) error {
	return s.act.Send(ctx, Msg[S]{kind: kApply, batch: b})
}

// handle handles a message on a shard without a store (handleStored, in
// persist.go, on one with a store).
func (s *Shard[S]) handle(m Msg[S]) {
	switch m.kind {
	case kCheck:
		now, err := s.now()
		if err != nil {
			m.reply <- Reply{Err: err}
			return
		}
		// Decide into the shard's scratch: a pointer to a local would
		// escape through the algorithm's interface and allocate.
		err = s.check(m.key, m.cost, now, &s.scratch)
		s.publishLen()
		m.reply <- Reply{D: s.scratch, Err: err}
	case kBatch:
		b := m.batch
		now, err := s.now()
		if err != nil {
			b.Err = err
		} else if s.m.len() >= s.prefetchMin {
			s.checkBatch(b, now)
		} else {
			for i := range b.Len() {
				key, cost := b.item(i)
				if err := s.check(key, cost, now, b.out(i)); err != nil {
					b.setErr(i, err)
				}
			}
		}
		s.publishLen()
		b.Done <- b
	case kApply:
		b := m.batch
		for i := range b.Items {
			it := &b.Items[i]
			if err := s.apply(it.Key, it.At, it.Cost); err != nil && b.Err == nil {
				b.Err = err
			}
		}
		s.publishLen()
		b.Done <- b
	case kControl:
		c := m.ctrl
		c.err = c.run(s)
		s.publishLen()
		c.done <- struct{}{}
	}
}

// setErr records item i's error.
func (b *Batch) setErr(i int, err error) {
	if b.Errs == nil {
		b.Errs = make([]error, b.Len())
	}
	b.Errs[i] = err
}

// publishLen makes the key count visible to Len before the shard answers,
// so a caller that got its reply sees its own key counted.
func (s *Shard[S]) publishLen() {
	if n := int64(s.m.len()); n != s.keys.Load() {
		s.keys.Store(n)
	}
}

func (s *Shard[S]) now() (int64, error) {
	now, err := s.clk.Now()
	if err != nil {
		s.clockErrs.Add(1)
		return 0, fmt.Errorf("%w: %w", errs.Clock, err)
	}
	return now, nil
}

// gcraOf returns alg if it is GCRA, else nil. GCRA implements only
// Algorithm[int64], so a non-nil result means S is int64.
func gcraOf[S any](alg algorithm.Algorithm[S]) *algorithm.GCRA {
	if g, ok := any(alg).(algorithm.GCRA); ok {
		return &g
	}
	return nil
}

// batchChunk is how many items of a batch checkBatch prefetches together.
const batchChunk = 16

// prefetchMinKeys is the number of keys from which a shard prefetches for
// its batches. Below it the table (about 40 bytes a key) fits the caches
// and the hints only cost; above, they halve a batched check. Measured
// (BenchmarkCheckBatchKeys, ns per key without → with, interleaved runs on
// a 2-vCPU VM): 30k keys 521 → 200, 100k 617 → 259, 1M 1284 → 750; with
// the hints at every size, 10k keys went 171 → 164 and 1k 107 → 142.
// Tests lower it.
var prefetchMinKeys = 16384

// checkBatch decides a batch on a shard without a store whose table has
// outgrown the caches (prefetchMinKeys), in chunks of batchChunk items. A
// check's cache misses (the request key's bytes, the table group, the held
// key's bytes) depend on one another, and one check's instructions fill
// the processor's window, so checked one after the other each miss is paid
// in full. Here the chunk's misses are started together, stage by stage,
// with prefetch hints, and the items are then decided in order with the
// hashes already computed. Prefetching changes nothing a check computes.
func (s *Shard[S]) checkBatch(b *Batch, now int64) {
	var hs [batchChunk]uint64
	n := b.Len()
	for base := 0; base < n; base += batchChunk {
		m := min(batchChunk, n-base)
		for j := range m {
			key, _ := b.item(base + j)
			prefetch(uintptr(unsafe.Pointer(unsafe.StringData(key))))
		}
		for j := range m {
			key, _ := b.item(base + j)
			hs[j] = s.m.hash(key)
			s.m.prefetchGroup(hs[j])
		}
		for j := range m {
			s.m.prefetchKey(hs[j])
		}
		for j := range m {
			key, cost := b.item(base + j)
			if err := s.checkHash(hs[j], key, cost, now, b.out(base+j)); err != nil {
				b.setErr(base+j, err)
			}
		}
	}
}

// check decides one request on a shard without a store (checkKeyStored on
// one with a store), writing the decision into *d.
func (s *Shard[S]) check(key string, cost, now int64, d *algorithm.Decision) error {
	return s.checkHash(s.m.hash(key), key, cost, now, d)
}

// checkHash is check with the key's hash already computed.
func (s *Shard[S]) checkHash(h uint64, key string, cost, now int64, d *algorithm.Decision) error {
	if cost > s.cap {
		// The limit shrank after the caller validated the cost.
		*d = algorithm.Decision{}
		return fmt.Errorf("%w: cost %d, capacity %d", errs.CostExceedsBurst, cost, s.cap)
	}
	p := s.m.getHash(h, key)
	if s.gcra != nil && p != nil {
		// The default algorithm on a key already held: a direct call
		// instead of the interface's (and the wrapper that copies the GCRA
		// for it), the state updated in place.
		tat := any(p).(*int64) // S is int64 whenever s.gcra is set
		next, changed := s.gcra.StepInto(*tat, now, cost, d)
		if changed {
			*tat = next
		}
		return nil
	}
	var st S
	if p != nil {
		st = *p
	} else {
		st = s.alg.Fresh(now)
	}
	next, changed := s.step(st, now, cost, d)
	if changed {
		if p != nil {
			*p = next
		} else if err := s.insertHash(h, key, next, now); err != nil {
			*d = algorithm.Decision{}
			return err
		}
	}
	return nil
}

// step runs the algorithm on st, writing the decision into *d.
func (s *Shard[S]) step(st S, now, cost int64, d *algorithm.Decision) (next S, changed bool) {
	if s.into != nil {
		return s.into.StepInto(st, now, cost, d)
	}
	next, *d, changed = s.alg.Step(st, now, cost)
	return next, changed
}

// apply applies an admission of cost made elsewhere at at.
func (s *Shard[S]) apply(key string, at, cost int64) error {
	if p := s.m.get(key); p != nil {
		*p = s.alg.Apply(*p, at, cost)
		return nil
	}
	next, now, keep, err := s.appliedFresh(at, cost)
	if err != nil || !keep {
		return err
	}
	return s.insert(key, next, now)
}

// appliedFresh is the state a key the shard does not hold gets from an
// admission of cost made elsewhere at at, and the time it was read; keep
// is false when that state is already idle, so there is nothing to hold.
func (s *Shard[S]) appliedFresh(at, cost int64) (next S, now int64, keep bool, err error) {
	now, err = s.now()
	if err != nil {
		return next, 0, false, err
	}
	next = s.alg.Apply(s.alg.Fresh(now), at, cost)
	return next, now, s.alg.IdleAt(next) > now, nil
}

// insert adds a new key, making room under MaxKeys by evicting idle keys.
func (s *Shard[S]) insert(key string, st S, now int64) error {
	return s.insertHash(s.m.hash(key), key, st, now)
}

// insertHash is insert with the key's hash already computed.
func (s *Shard[S]) insertHash(h uint64, key string, st S, now int64) error {
	if s.maxKeys > 0 && s.m.len() >= s.maxKeys {
		s.evict(now)
		if s.m.len() >= s.maxKeys {
			s.refused.Add(1)
			return fmt.Errorf("%w: shard %d holds %d keys and none is idle", errs.Full, s.id, s.m.len())
		}
	}
	// Clone: the caller's key may alias a buffer it will reuse.
	s.m.insertHash(h, strings.Clone(key), st)
	return nil
}

// evict visits up to evictN keys of the ongoing sweep pass (starting another
// pass at most once) and removes every idle one it finds.
func (s *Shard[S]) evict(now int64) {
	restarted := false
	for range s.evictN {
		k, v, ok := s.sweep.next(s.m)
		if !ok {
			if restarted {
				return
			}
			restarted = true
			continue
		}
		if s.alg.IdleAt(*v) <= now {
			s.remember(k)
			s.m.delete(k)
			s.evicted.Add(1)
		}
	}
}

// sweepTick removes idle keys among the next SweepBudget keys of the pass.
func (s *Shard[S]) sweepTick() {
	// Give back the memory of subtables earlier deletions emptied, a few
	// per tick, after this tick's own deletions.
	defer s.m.compact(compactBudget)
	if s.m.len() == 0 {
		s.sweep.reset()
		return
	}
	now, err := s.now()
	if err != nil {
		return
	}
	for range s.sweepN {
		k, v, ok := s.sweep.next(s.m)
		if !ok {
			break
		}
		if s.alg.IdleAt(*v) <= now {
			s.remember(k)
			s.m.delete(k)
			s.swept.Add(1)
		}
	}
	s.publishLen()
}

// control is a rare message: a limit change, a cleanup step, a snapshot.
type control[S any] struct {
	run  func(s *Shard[S]) error
	err  error
	done chan struct{}
}

func (s *Shard[S]) do(ctx context.Context, run func(s *Shard[S]) error) error {
	c := &control[S]{run: run, done: make(chan struct{}, 1)}
	if err := s.act.Send(ctx, Msg[S]{kind: kControl, ctrl: c}); err != nil {
		return err
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetAlgorithm replaces the shard's algorithm (a limit change), re-basing
// every key's state under it. Idle keys are dropped on the way.
func (s *Shard[S]) SetAlgorithm(ctx context.Context, alg algorithm.Algorithm[S]) error {
	return s.do(ctx, func(s *Shard[S]) error {
		now, err := s.now()
		if err != nil {
			return err
		}
		prev := s.alg
		for k, v := range s.m.all() {
			if prev.IdleAt(*v) <= now {
				s.remember(k)
				s.m.delete(k)
				continue
			}
			if s.p != nil {
				s.p.dirty[k] = struct{}{} // saved under the new limit
			}
			*v = alg.Rebase(*v, now, prev)
		}
		s.alg = alg
		s.cap = alg.Capacity()
		s.into, _ = alg.(algorithm.StepperInto[S])
		s.gcra = gcraOf(alg)
		// Positions of paused passes stay valid: the map was only modified.
		return nil
	})
}

// CleanupStep removes keys idle for at least staleAfter among the next
// budget keys of an explicit cleanup pass; start begins a new pass. It
// reports how many keys it removed and whether the pass is complete.
func (s *Shard[S]) CleanupStep(ctx context.Context, staleAfter time.Duration, budget int, start bool) (removed int, done bool, err error) {
	if budget <= 0 {
		budget = DefaultCleanBudget
	}
	err = s.do(ctx, func(s *Shard[S]) error {
		if start {
			s.clean.reset()
		}
		now, err := s.now()
		if err != nil {
			return err
		}
		limit := now - int64(staleAfter)
		for range budget {
			k, v, ok := s.clean.next(s.m)
			if !ok {
				done = true
				break
			}
			if s.alg.IdleAt(*v) <= limit {
				s.remember(k)
				s.m.delete(k)
				removed++
			}
		}
		s.m.compact(compactBudget)
		return nil
	})
	return removed, done, err
}

// Entry is one key's state in a snapshot.
type Entry[S any] struct {
	Key   string
	State S
}

// Snapshot returns every key that is not idle, with its state.
func (s *Shard[S]) Snapshot(ctx context.Context) ([]Entry[S], error) {
	var out []Entry[S]
	err := s.do(ctx, func(s *Shard[S]) error {
		now, err := s.now()
		if err != nil {
			return err
		}
		out = make([]Entry[S], 0, s.m.len())
		for k, v := range s.m.all() {
			if s.alg.IdleAt(*v) > now {
				out = append(out, Entry[S]{Key: k, State: *v})
			}
		}
		return nil
	})
	return out, err
}

// Restore sets the given states, replacing what the shard holds for those
// keys (for loading a snapshot into an empty limiter). Idle states are
// skipped; keys beyond MaxKeys are refused with flux.ErrFull.
func (s *Shard[S]) Restore(ctx context.Context, entries []Entry[S]) error {
	return s.do(ctx, func(s *Shard[S]) error {
		now, err := s.now()
		if err != nil {
			return err
		}
		for _, e := range entries {
			if s.alg.IdleAt(e.State) <= now {
				continue
			}
			if p := s.m.get(e.Key); p != nil {
				*p = e.State
			} else if err := s.insert(e.Key, e.State, now); err != nil {
				return err
			}
			if s.p != nil {
				s.p.dirty[e.Key] = struct{}{}
			}
		}
		return nil
	})
}

// Algorithm returns the shard's current algorithm, read on its goroutine.
func (s *Shard[S]) Algorithm(ctx context.Context) (algorithm.Algorithm[S], error) {
	var a algorithm.Algorithm[S]
	err := s.do(ctx, func(s *Shard[S]) error { a = s.alg; return nil })
	return a, err
}
