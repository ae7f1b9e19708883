package shard

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/internal/errs"
	"github.com/fluxlimiter/flux/store"
)

// Failure says what a shard decides when its store cannot answer in time.
type Failure uint8

// Failure policies.
const (
	// FailLocal decides from the shard's memory: a key it holds by its
	// state, a key it remembers as fresh (see Persistence.Remember) as a
	// fresh key; any other key is denied, so a restart never forgives
	// anyone.
	FailLocal Failure = iota
	// FailOpen decides from memory as FailLocal does, and admits, without
	// recording it, a request for any other key.
	FailOpen
	// FailClosed denies every request that needs the store.
	FailClosed
)

// String returns "local", "open" or "closed".
func (f Failure) String() string {
	switch f {
	case FailOpen:
		return "open"
	case FailClosed:
		return "closed"
	default:
		return "local"
	}
}

// Defaults for Persistence fields left zero.
const (
	DefaultFlushEvery      = 100 * time.Millisecond
	DefaultStoreTimeout    = 50 * time.Millisecond
	DefaultStoreRetryAfter = time.Second
	// DefaultRemember is how many keys a shard remembers as fresh after
	// forgetting their state: at most about 4.5 MiB.
	DefaultRemember = 1 << 18
	// finalFlushTimeout bounds the flush a stopping shard makes.
	finalFlushTimeout = 5 * time.Second
)

// Persistence connects a shard to a store.
//
// On a miss the shard loads the key from the store outside its goroutine;
// that key's requests wait (parked, in order) while other keys are served,
// and concurrent requests for it share one load. Writes are write-behind
// (dirty keys saved in batches every FlushEvery) or write-through (a
// decision that changed a key's state is answered only once the state is
// saved; saves are grouped per shard).
//
// A store call that fails or times out marks the store down: every request
// still waiting for it is decided at once by OnFailure, and so is every
// request that needs the store until it is back, so that no decision waits
// for a store known to be down. Meanwhile one load per FlushEvery, which
// nobody waits for, probes the store; the first that succeeds marks it up
// again, and saving resumes.
type Persistence struct {
	Store store.Store
	// Limiter is the namespace of this limiter's keys in the store.
	Limiter string
	// Through selects write-through; write-behind otherwise.
	Through bool
	// FlushEvery is the write-behind period, and how often a store that
	// is down is probed (DefaultFlushEvery if zero).
	FlushEvery time.Duration
	// Timeout bounds every store call a decision waits for
	// (DefaultStoreTimeout if zero).
	Timeout time.Duration
	// OnFailure is the policy when the store fails or times out.
	OnFailure Failure
	// RetryAfter is what a denial caused by the store reports
	// (DefaultStoreRetryAfter if zero).
	RetryAfter time.Duration
	// Remember bounds how many keys each shard remembers as fresh after
	// dropping their state (DefaultRemember if zero; negative: none): keys
	// the sweep, an eviction or a cleanup forgot while they equalled a
	// fresh key, and keys the store answered for as fresh. While the store
	// is down, FailLocal and FailOpen decide a remembered key from memory
	// as a fresh key. Each remembered key costs 9 to 18 bytes (a hash);
	// beyond the bound the least recently remembered half drops out, and
	// those keys are again denied under FailLocal during an outage.
	Remember int
}

// StoreStats are a shard's store counters.
type StoreStats struct {
	Loads      uint64 // loads attempted
	LoadErrors uint64 // loads that failed or timed out
	Saves      uint64 // flushes attempted (one Save call each)
	SaveErrors uint64 // flushes that failed or timed out
	Fallbacks  uint64 // requests decided by the failure policy
	Foreign    uint64 // loaded states another algorithm wrote, ignored
	Dirty      int    // keys waiting to be saved, as of the last message
}

// persist is a shard's store state. All of it but the counters and bg is
// owned by the shard goroutine.
type persist[S any] struct {
	cfg      Persistence
	loading  map[string]*loadWait
	dirty    map[string]struct{}
	undo     map[string]S // before-images for rollback (write-through, closed)
	held     []held       // write-through replies waiting for the next flush
	flushing bool

	// The store is down from a failed call until a probe succeeds. epoch
	// counts the outages: a call started before the latest one began cannot
	// end it.
	down     bool
	epoch    uint64
	probing  bool   // a probe is in flight
	probeKey string // what a probe loads: a key whose call failed
	loadSeq  uint64 // numbers loads, so a late result finds only its own waiters

	loads, loadErrs, saves, saveErrs, fallbacks, foreign atomic.Uint64
	dirtyN                                               atomic.Int64

	bg sync.WaitGroup // loaders and flushers

	// unsaved are the keys of flushes that failed as the shard stopped,
	// for its final flush.
	unsavedMu sync.Mutex
	unsaved   []string
	ctx       context.Context
	cancel    context.CancelFunc
}

// parked is a request waiting for its key to load.
type parked struct {
	reply chan Reply // a single check
	cost  int64
	batch *Batch // or an item of a batch
	i     int
	apply bool // the batch is a batch of remote admissions
}

type loadWait struct {
	items []parked
	seq   uint64
}

// held is a reply waiting for a write-through flush.
type held struct {
	reply chan Reply
	d     algorithm.Decision
	batch *Batch
}

// loaded is what a loader reports back.
type loaded struct {
	keys  []string
	out   []store.Entry
	found []bool
	err   error
	seq   uint64 // loadWait.seq
	epoch uint64 // persist.epoch when it started
	probe bool   // nobody waits for it
}

// flushed is what a flusher reports back.
type flushed struct {
	keys    []string
	entries []store.Entry
	undo    map[string][]byte // encoded before-images, for rollback
	waiters []held
	err     error
	epoch   uint64
}

func newPersist[S any](cfg Persistence) *persist[S] {
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = DefaultFlushEvery
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultStoreTimeout
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultStoreRetryAfter
	}
	p := &persist[S]{
		cfg:     cfg,
		loading: make(map[string]*loadWait),
		dirty:   make(map[string]struct{}),
		undo:    make(map[string]S),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// StoreStats returns the shard's store counters (zero without a store).
func (s *Shard[S]) StoreStats() StoreStats {
	p := s.p
	if p == nil {
		return StoreStats{}
	}
	return StoreStats{
		Loads: p.loads.Load(), LoadErrors: p.loadErrs.Load(),
		Saves: p.saves.Load(), SaveErrors: p.saveErrs.Load(),
		Fallbacks: p.fallbacks.Load(), Foreign: p.foreign.Load(), Dirty: int(p.dirtyN.Load()),
	}
}

// refuseWrites reports whether a state change must be refused: under
// write-through with the closed policy while the store is down.
func (p *persist[S]) refuseWrites() bool {
	return p.cfg.Through && p.cfg.OnFailure == FailClosed && p.down
}

// remember notes that key, whose state the shard is dropping, equals a
// fresh key.
func (s *Shard[S]) remember(key string) {
	if s.fresh != nil {
		s.fresh.add(s.m.hash(key))
	}
}

// handleStored handles a message on a shard with a store.
func (s *Shard[S]) handleStored(m Msg[S]) {
	switch m.kind {
	case kCheck:
		now, err := s.now()
		if err != nil {
			m.reply <- Reply{Err: err}
			return
		}
		s.checkStored(m, now)
	case kBatch:
		b := m.batch
		now, err := s.now()
		if err != nil {
			b.Err = err
			b.Done <- b
			return
		}
		s.batchStored(b, now)
	case kApply:
		s.applyStored(m.batch)
	case kControl:
		c := m.ctrl
		c.err = c.run(s)
		s.publishLen()
		s.afterMessage()
		c.done <- struct{}{}
	case kLoaded:
		s.onLoaded(m.loaded)
		s.publishLen()
	case kFlushed:
		s.onFlushed(m.flushed)
	}
}

// checkStored is a single check on a shard with a store.
func (s *Shard[S]) checkStored(m Msg[S], now int64) {
	if s.m.get(m.key) == nil && s.miss(m.key, parked{reply: m.reply, cost: m.cost}, now) {
		if s.p.down { // decided by the failure policy, perhaps from memory
			s.publishLen()
			s.afterMessage()
		}
		return
	}
	err := s.checkKeyStored(m.key, m.cost, now, &s.scratch)
	s.publishLen()
	s.reply(m.reply, s.scratch, err)
	s.afterMessage()
}

// batchStored is a batch on a shard with a store: items whose key is not
// held wait for their load; the batch is answered when all are decided.
func (s *Shard[S]) batchStored(b *Batch, now int64) {
	b.parked = 1 // held open while the items are dealt out
	for i := range b.Len() {
		key, cost := b.item(i)
		if s.m.get(key) == nil {
			b.parked++
			if s.miss(key, parked{batch: b, i: i}, now) {
				continue
			}
			b.parked--
		}
		if err := s.checkKeyStored(key, cost, now, b.out(i)); err != nil {
			b.setErr(i, err)
		} else if s.changed {
			b.flush = true
		}
	}
	s.publishLen()
	s.unpark(b)
	s.afterMessage()
}

// applyStored is a batch of remote admissions on a shard with a store.
func (s *Shard[S]) applyStored(b *Batch) {
	now, err := s.now()
	if err != nil {
		b.Err = err
		b.Done <- b
		return
	}
	b.parked = 1
	for i := range b.Items {
		it := &b.Items[i]
		if s.m.get(it.Key) == nil {
			b.parked++
			if s.miss(it.Key, parked{batch: b, i: i, apply: true}, now) {
				continue
			}
			b.parked--
		}
		if err := s.applyKeyStored(it.Key, it.At, it.Cost); err != nil && b.Err == nil {
			b.Err = err
		}
	}
	s.publishLen()
	s.unpark(b)
	s.afterMessage()
}

// checkKeyStored decides one request on a shard with a store, writing the
// decision into *d: check, recording each change for the store (markDirty),
// and under write-through with the closed policy refusing changes while
// the store is down. It sets s.changed.
func (s *Shard[S]) checkKeyStored(key string, cost, now int64, d *algorithm.Decision) error {
	s.changed = false
	if cost > s.cap {
		// The limit shrank after the caller validated the cost.
		*d = algorithm.Decision{}
		return fmt.Errorf("%w: cost %d, capacity %d", errs.CostExceedsBurst, cost, s.cap)
	}
	h := s.m.hash(key)
	p := s.m.getHash(h, key)
	var st S
	if p != nil {
		st = *p
	} else {
		st = s.alg.Fresh(now)
	}
	next, changed := s.step(st, now, cost, d)
	if !changed {
		return nil
	}
	if s.p.refuseWrites() {
		// Write-through, closed policy, store down: nothing may be
		// admitted that cannot be saved.
		s.p.fallbacks.Add(1)
		*d = algorithm.Decision{Limit: d.Limit, RetryAfter: s.p.cfg.RetryAfter}
		return nil
	}
	if p != nil {
		s.markDirty(key, st, true)
		*p = next
	} else if err := s.insertHash(h, key, next, now); err != nil {
		*d = algorithm.Decision{}
		return err
	} else {
		s.markDirty(key, st, false)
	}
	s.changed = true
	return nil
}

// applyKeyStored is apply on a shard with a store, recording the change.
func (s *Shard[S]) applyKeyStored(key string, at, cost int64) error {
	if p := s.m.get(key); p != nil {
		s.markDirty(key, *p, true)
		*p = s.alg.Apply(*p, at, cost)
		return nil
	}
	next, now, keep, err := s.appliedFresh(at, cost)
	if err != nil || !keep {
		return err
	}
	if err := s.insert(key, next, now); err != nil {
		return err
	}
	s.markDirty(key, next, false)
	return nil
}

// RememberFresh makes a shard without a store remember, as a store's
// shard does under FailLocal and FailOpen, the keys it drops while they
// equal a fresh key (at most size of them; DefaultRemember if size is 0),
// for CheckKnown. It does nothing if the shard already remembers keys.
func (s *Shard[S]) RememberFresh(ctx context.Context, size int) error {
	return s.do(ctx, func(s *Shard[S]) error {
		if s.fresh == nil {
			if size <= 0 {
				size = DefaultRemember
			}
			s.fresh = newRemembered(size)
		}
		return nil
	})
}

// CheckKnown, on a shard without a store (the atomic engine's mirror of
// what the store answered), decides cost for key from memory if it holds key or
// remembers it as fresh (RememberFresh), a remembered key as a fresh key.
// For any other key it decides nothing and reports known = false.
func (s *Shard[S]) CheckKnown(ctx context.Context, key string, cost int64) (d algorithm.Decision, known bool, err error) {
	err = s.do(ctx, func(s *Shard[S]) error {
		now, err := s.now()
		if err != nil {
			return err
		}
		h := s.m.hash(key)
		if s.m.getHash(h, key) == nil && (s.fresh == nil || !s.fresh.has(h)) {
			return nil
		}
		known = true
		return s.checkHash(h, key, cost, now, &d)
	})
	return d, known, err
}

// miss handles a request for a key the shard does not hold. It returns true
// if the request was parked (or answered by the failure policy) and must
// not be decided now.
func (s *Shard[S]) miss(key string, w parked, now int64) bool {
	p := s.p
	if lw, ok := p.loading[key]; ok {
		lw.items = append(lw.items, w)
		return true
	}
	if p.down {
		s.fallback(key, w, now)
		return true
	}
	p.loadSeq++
	p.loading[key] = &loadWait{items: []parked{w}, seq: p.loadSeq}
	s.startLoad([]string{key}, p.loadSeq)
	return true
}

// storeFailed marks the store down after a failed call (of keys) and
// answers by the failure policy every request still waiting for a load,
// rather than letting each wait for its own timeout. Their loads' results
// will find no one to answer.
func (s *Shard[S]) storeFailed(keys []string, now int64, clockErr error) {
	p := s.p
	if !p.down {
		p.down = true
		p.epoch++
	}
	if len(keys) > 0 && p.probeKey != keys[0] {
		p.probeKey = strings.Clone(keys[0])
	}
	for key, lw := range p.loading {
		delete(p.loading, key)
		for _, w := range lw.items {
			if clockErr != nil {
				s.answer(w, algorithm.Decision{}, clockErr)
			} else {
				s.fallback(key, w, now)
			}
		}
	}
}

// probe loads a key whose call failed, with nobody waiting for it, to learn
// whether the store is back.
func (s *Shard[S]) probe() {
	p := s.p
	p.probing = true
	p.loads.Add(1)
	st, name, timeout, key, epoch := p.cfg.Store, p.cfg.Limiter, p.cfg.Timeout, p.probeKey, p.epoch
	p.bg.Go(func() {
		ctx, cancel := context.WithTimeout(p.ctx, timeout)
		_, _, err := st.Load(ctx, name, key)
		cancel()
		_ = s.act.Post(p.ctx, Msg[S]{kind: kLoaded, loaded: &loaded{keys: []string{key}, err: err, epoch: epoch, probe: true}})
	})
}

// startLoad loads keys outside the shard goroutine and posts the result.
func (s *Shard[S]) startLoad(keys []string, seq uint64) {
	p := s.p
	p.loads.Add(uint64(len(keys)))
	st, name, timeout, epoch := p.cfg.Store, p.cfg.Limiter, p.cfg.Timeout, p.epoch
	p.bg.Go(func() {
		res := &loaded{keys: keys, out: make([]store.Entry, len(keys)), found: make([]bool, len(keys)), seq: seq, epoch: epoch}
		ctx, cancel := context.WithTimeout(p.ctx, timeout)
		if bl, ok := st.(store.BatchLoader); ok && len(keys) > 1 {
			res.err = bl.LoadMany(ctx, name, keys, res.out, res.found)
		} else {
			for i, k := range keys {
				if res.out[i], res.found[i], res.err = st.Load(ctx, name, k); res.err != nil {
					break
				}
			}
		}
		cancel()
		_ = s.act.Post(p.ctx, Msg[S]{kind: kLoaded, loaded: res})
	})
}

// onLoaded installs loaded states and decides the requests parked on them.
func (s *Shard[S]) onLoaded(r *loaded) {
	p := s.p
	now, clockErr := s.now()
	if r.probe {
		p.probing = false
	}
	switch {
	case r.err != nil:
		p.loadErrs.Add(uint64(len(r.keys)))
		s.storeFailed(r.keys, now, clockErr)
	case r.epoch == p.epoch:
		p.down = false
	}
	if r.probe {
		s.afterMessage()
		return
	}
	for i, key := range r.keys {
		lw := p.loading[key]
		if lw == nil || lw.seq != r.seq {
			continue // answered when the store was found down
		}
		delete(p.loading, key)
		err := r.err
		if err == nil && clockErr == nil {
			fresh := true
			if r.found[i] {
				st, derr := s.alg.DecodeState(r.out[i].State)
				switch {
				case derr != nil:
					// The store answered, with a state of another algorithm
					// (the limiter's algorithm changed): nothing of it applies.
					p.foreign.Add(1)
				case s.alg.IdleAt(st) > now && s.m.get(key) == nil:
					fresh = false
					if ierr := s.insert(key, st, now); ierr != nil {
						err = ierr
					}
				}
			}
			if fresh {
				s.remember(key) // in case a peek leaves it out of the table
			}
		}
		for _, w := range lw.items {
			switch {
			case clockErr != nil:
				s.answer(w, algorithm.Decision{}, clockErr)
			case err != nil:
				s.fallback(key, w, now)
			default:
				s.decideParked(key, w, now)
			}
		}
	}
	s.afterMessage()
}

// decideParked decides a parked request now that its key is loaded.
func (s *Shard[S]) decideParked(key string, w parked, now int64) {
	switch {
	case w.reply != nil:
		err := s.checkKeyStored(key, w.cost, now, &s.scratch)
		s.reply(w.reply, s.scratch, err)
	case w.apply:
		it := &w.batch.Items[w.i]
		if err := s.applyKeyStored(it.Key, it.At, it.Cost); err != nil && w.batch.Err == nil {
			w.batch.Err = err
		}
		s.unpark(w.batch)
	default:
		b := w.batch
		key, cost := b.item(w.i)
		if err := s.checkKeyStored(key, cost, now, b.out(w.i)); err != nil {
			b.setErr(w.i, err)
		} else if s.changed {
			b.flush = true
		}
		s.unpark(b)
	}
}

// fallback answers a request for key by the failure policy.
func (s *Shard[S]) fallback(key string, w parked, now int64) {
	p := s.p
	p.fallbacks.Add(1)
	if w.apply { // a remote admission waits for no one: keep it in memory
		it := &w.batch.Items[w.i]
		_ = s.applyKeyStored(it.Key, it.At, it.Cost) // kept in memory, saved when the store is back
		s.unpark(w.batch)
		return
	}
	if s.fresh != nil && (s.m.get(key) != nil || s.fresh.has(s.m.hash(key))) {
		// Held, or fresh when this shard last held it and not decided by
		// it since: decided from memory (a remembered key as a fresh key).
		s.decideParked(key, w, now)
		return
	}
	var d algorithm.Decision
	d.Limit = int(s.cap)
	if p.cfg.OnFailure == FailOpen {
		d.Allowed = true
		d.Remaining = int(s.cap) - 1
	} else {
		d.RetryAfter = p.cfg.RetryAfter
	}
	cost := w.cost
	if w.reply == nil {
		_, cost = w.batch.item(w.i)
	}
	if cost == 0 { // a peek reports, it does not decide
		d.Allowed = p.cfg.OnFailure == FailOpen
	}
	s.answer(w, d, nil)
}

// answer replies to one parked request.
func (s *Shard[S]) answer(w parked, d algorithm.Decision, err error) {
	if w.reply != nil {
		s.reply(w.reply, d, err)
		return
	}
	b := w.batch
	if !w.apply {
		o := w.i
		if b.Idx != nil {
			o = int(b.Idx[w.i])
		}
		b.Out[o] = d
		if err != nil {
			b.setErr(w.i, err)
		}
	} else if err != nil && b.Err == nil {
		b.Err = err
	}
	s.unpark(b)
}

// reply answers a single check, holding the reply for the next flush if it
// changed state under write-through.
func (s *Shard[S]) reply(rc chan Reply, d algorithm.Decision, err error) {
	if err == nil && s.changed && s.p.cfg.Through {
		s.p.held = append(s.p.held, held{reply: rc, d: d})
		return
	}
	rc <- Reply{D: d, Err: err}
}

// unpark counts down a batch's parked items and finishes it at zero.
func (s *Shard[S]) unpark(b *Batch) {
	b.parked--
	if b.parked == 0 {
		s.finishBatch(b)
	}
}

// finishBatch answers a batch whose items are all decided, holding it for
// the next flush if it changed state under write-through.
func (s *Shard[S]) finishBatch(b *Batch) {
	if b.parked > 0 {
		return
	}
	if b.flush && s.p.cfg.Through && b.Err == nil {
		b.flush = false
		s.p.held = append(s.p.held, held{batch: b})
		return
	}
	b.Done <- b
}

// markDirty records that key's state changed (prev is its state before, for
// rollback under write-through with the closed policy).
func (s *Shard[S]) markDirty(key string, prev S, existed bool) {
	p := s.p
	p.dirty[key] = struct{}{}
	if p.cfg.Through && p.cfg.OnFailure == FailClosed {
		if _, ok := p.undo[key]; !ok {
			if !existed {
				prev = s.alg.Fresh(0)
			}
			p.undo[key] = prev
		}
	}
}

// afterMessage starts a write-through flush if one is due.
func (s *Shard[S]) afterMessage() {
	p := s.p
	p.dirtyN.Store(int64(len(p.dirty)))
	if !p.cfg.Through || p.flushing {
		return
	}
	if len(p.held) > 0 || len(p.dirty) > 0 {
		now, err := s.now()
		if err != nil || p.down {
			s.releaseHeld(p.held, nil, true)
			p.held = nil
			return
		}
		s.startFlush(now)
	}
}

// flushTick is the write-behind timer, and the probe timer while the store
// is down.
func (s *Shard[S]) flushTick() {
	p := s.p
	if p.down {
		if len(p.held) > 0 {
			s.releaseHeld(p.held, nil, true)
			p.held = nil
		}
		if !p.probing && !p.flushing && p.probeKey != "" {
			s.probe()
		}
		return
	}
	if p.flushing || len(p.dirty) == 0 && len(p.held) == 0 {
		return
	}
	now, err := s.now()
	if err != nil {
		return
	}
	s.startFlush(now)
}

// snapshotDirty encodes the dirty keys: entries to save and idle or
// forgotten keys to delete.
func (s *Shard[S]) snapshotDirty(now int64) (keys []string, entries []store.Entry, deletes []string, undo map[string][]byte) {
	p := s.p
	for k := range p.dirty {
		keys = append(keys, k)
		if sp := s.m.get(k); sp != nil && s.alg.IdleAt(*sp) > now {
			entries = append(entries, store.Entry{Key: k, State: s.alg.AppendState(nil, *sp), IdleAt: s.alg.IdleAt(*sp)})
		} else {
			deletes = append(deletes, k)
		}
	}
	clear(p.dirty)
	if len(p.undo) > 0 {
		undo = make(map[string][]byte, len(p.undo))
		for k, v := range p.undo {
			undo[k] = s.alg.AppendState(nil, v)
		}
		clear(p.undo)
	}
	return keys, entries, deletes, undo
}

// startFlush saves the dirty keys outside the shard goroutine.
func (s *Shard[S]) startFlush(now int64) {
	p := s.p
	keys, entries, deletes, undo := s.snapshotDirty(now)
	waiters := p.held
	p.held = nil
	p.flushing = true
	p.saves.Add(1)
	st, name, timeout, epoch := p.cfg.Store, p.cfg.Limiter, p.cfg.Timeout, p.epoch
	p.bg.Go(func() {
		ctx, cancel := context.WithTimeout(p.ctx, timeout)
		err := save(ctx, st, name, entries, deletes)
		cancel()
		res := &flushed{keys: keys, entries: entries, undo: undo, waiters: waiters, err: err, epoch: epoch}
		if s.act.Post(p.ctx, Msg[S]{kind: kFlushed, flushed: res}) != nil {
			// The shard is stopping: answer the waiters here, and leave
			// keys that failed to save to its final flush.
			s.releaseHeld(waiters, nil, err != nil)
			if err != nil {
				p.unsavedMu.Lock()
				p.unsaved = append(p.unsaved, keys...)
				p.unsavedMu.Unlock()
			}
		}
	})
}

func save(ctx context.Context, st store.Store, name string, entries []store.Entry, deletes []string) error {
	if len(entries) > 0 {
		if err := st.Save(ctx, name, entries); err != nil {
			return err
		}
	}
	if len(deletes) > 0 {
		return st.Delete(ctx, name, deletes)
	}
	return nil
}

// onFlushed takes a flusher's result back on the shard goroutine.
func (s *Shard[S]) onFlushed(r *flushed) {
	p := s.p
	p.flushing = false
	if r.err == nil {
		if r.epoch == p.epoch {
			p.down = false
		}
		s.releaseHeld(r.waiters, nil, false)
		s.afterMessage()
		return
	}
	p.saveErrs.Add(1)
	now, err := s.now()
	s.storeFailed(r.keys, now, err)
	rollback := p.cfg.Through && p.cfg.OnFailure == FailClosed
	if rollback {
		// Restore each key whose state is still the one that failed to
		// save; a key changed since keeps its state (it errs towards
		// counting too much, never too little).
		saved := make(map[string][]byte, len(r.entries))
		for _, e := range r.entries {
			saved[e.Key] = e.State
		}
		for k, before := range r.undo {
			sp := s.m.get(k)
			if sp == nil || !bytes.Equal(s.alg.AppendState(nil, *sp), saved[k]) {
				continue
			}
			prev, derr := s.alg.DecodeState(before)
			if derr != nil || s.alg.IdleAt(prev) <= now {
				s.m.delete(k)
			} else {
				*sp = prev
			}
		}
	} else {
		for _, k := range r.keys { // keep them for the next attempt
			p.dirty[k] = struct{}{}
		}
	}
	s.releaseHeld(r.waiters, nil, rollback)
	// Replies held for the next flush are not kept waiting for a store
	// that is down.
	s.releaseHeld(p.held, nil, true)
	p.held = nil
	p.dirtyN.Store(int64(len(p.dirty)))
	s.publishLen()
}

// releaseHeld answers write-through replies after a flush. With deny set
// (the save failed under the closed policy, or the store is down), every
// admission among them is turned into a denial.
func (s *Shard[S]) releaseHeld(waiters []held, _ error, failed bool) {
	p := s.p
	deny := failed && p.cfg.OnFailure == FailClosed
	retry := p.cfg.RetryAfter
	if failed {
		p.fallbacks.Add(uint64(len(waiters)))
	}
	for _, h := range waiters {
		if h.reply != nil {
			d := h.d
			if deny && d.Allowed {
				d = algorithm.Decision{Limit: d.Limit, RetryAfter: retry}
			}
			h.reply <- Reply{D: d}
			continue
		}
		b := h.batch
		if deny {
			for i := range b.Len() {
				o := b.out(i)
				if _, cost := b.item(i); o.Allowed && cost > 0 {
					*o = algorithm.Decision{Limit: o.Limit, RetryAfter: retry}
				}
			}
		}
		b.Done <- b
	}
}

// stopPersist runs on the shard goroutine as it stops: it waits for the
// loaders and flushers, answers parked requests, and saves what is dirty.
func (s *Shard[S]) stopPersist() {
	p := s.p
	p.bg.Wait() // their posts fail now: the actor is stopping
	for _, k := range p.unsaved {
		p.dirty[k] = struct{}{}
	}
	for key, lw := range p.loading {
		for _, w := range lw.items {
			s.answer(w, algorithm.Decision{}, fmt.Errorf("%w: key %q was loading", errs.Closed, key))
		}
	}
	clear(p.loading)
	p.flushing = false
	if len(p.dirty) > 0 {
		now, err := s.now()
		if err == nil {
			keys, entries, deletes, _ := s.snapshotDirty(now)
			ctx, cancel := context.WithTimeout(context.Background(), finalFlushTimeout)
			if err := save(ctx, p.cfg.Store, p.cfg.Limiter, entries, deletes); err != nil {
				p.saveErrs.Add(1)
			}
			cancel()
			_ = keys
		}
	}
	s.releaseHeld(p.held, nil, false)
	p.held = nil
	p.cancel()
}
