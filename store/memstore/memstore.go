// Package memstore is an in-memory store.Store for deterministic tests and
// for running the store path of a limiter without a server.
//
// It implements every optional capability of package store (BatchLoader,
// Updater, AtomicGCRA, Cleaner) with the same semantics as the server
// backends, driven by an injectable clock: an entry written at w expires
// when the clock passes w + store.TTL(IdleAt, w, margin), as a per-key TTL
// would (checked when the entry is read, and by Cleanup). It can also be made to fail on demand, to test what callers do
// when their store is down.
package memstore

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/internal/gcrastep"
)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Clock decides expiry (clock.NewSystem() if nil). Pass the limiter's
	// clock, a clock.Manual in tests.
	Clock clock.Clock
	// Margin is how long an entry is kept after its IdleAt
	// (store.DefaultMargin if zero; negative means none).
	Margin time.Duration
}

// Store is an in-memory store. It is safe for simultaneous use; one mutex
// guards its maps.
type Store struct {
	clk    clock.Clock
	margin time.Duration

	mu     sync.Mutex
	state  map[string]map[string]item // limiter → key → entry
	gcra   map[string]map[string]item // limiter → key → TAT in IdleAt (AtomicGCRA records)
	fail   error
	closed bool
}

var (
	_ store.Store       = (*Store)(nil)
	_ store.BatchLoader = (*Store)(nil)
	_ store.Updater     = (*Store)(nil)
	_ store.AtomicGCRA  = (*Store)(nil)
	_ store.Cleaner     = (*Store)(nil)
	_ store.Pinger      = (*Store)(nil)
)

// New returns an empty Store.
func New(opts Options) *Store {
	if opts.Clock == nil {
		opts.Clock = clock.NewSystem()
	}
	opts.Margin = store.Margin(opts.Margin)
	return &Store{
		clk:    opts.Clock,
		margin: opts.Margin,
		state:  make(map[string]map[string]item),
		gcra:   make(map[string]map[string]item),
	}
}

// Fail makes every later call fail with an error wrapping err until Recover
// is called: a store that is down.
func (s *Store) Fail(err error) {
	s.mu.Lock()
	s.fail = err
	s.mu.Unlock()
}

// Recover undoes Fail.
func (s *Store) Recover() { s.Fail(nil) }

// Len returns the number of entries held for limiter (expired entries not
// yet removed included), AtomicGCRA records not counted.
func (s *Store) Len(limiter string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.state[limiter])
}

// item is a stored entry with the time it expires: written at w, an entry
// expires at w + store.TTL(IdleAt, w, margin), as with a per-key TTL in
// Redis or NATS.
type item struct {
	store.Entry
	expiresAt int64 // math.MaxInt64: never
}

// begin locks s and reports whether a call may proceed; it returns the
// current time. On error s is unlocked.
func (s *Store) begin(ctx context.Context, limiter string, keys ...string) (int64, error) {
	if limiter == "" {
		return 0, fmt.Errorf("%w: empty limiter name", store.ErrInvalidKey)
	}
	for _, k := range keys {
		if k == "" {
			return 0, fmt.Errorf("%w: empty key", store.ErrInvalidKey)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("memstore: %w", err)
	}
	now, err := s.clk.Now()
	if err != nil {
		return 0, fmt.Errorf("memstore: clock: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, store.ErrClosed
	}
	if s.fail != nil {
		err := s.fail
		s.mu.Unlock()
		return 0, fmt.Errorf("memstore: %w", err)
	}
	return now, nil
}

// get returns a live item of m (one of s's maps), removing it if expired.
// s.mu is held.
func get(m map[string]map[string]item, limiter, key string, now int64) (item, bool) {
	it, ok := m[limiter][key]
	if ok && now > it.expiresAt {
		delete(m[limiter], key)
		return item{}, false
	}
	return it, ok
}

// put stores e in m (one of s's maps), written at now. s.mu is held.
func (s *Store) put(m map[string]map[string]item, limiter string, e store.Entry, now int64) {
	lm := m[limiter]
	if lm == nil {
		lm = make(map[string]item)
		m[limiter] = lm
	}
	it := item{Entry: e, expiresAt: math.MaxInt64}
	it.State = append([]byte(nil), e.State...)
	if ttl, ok := store.TTL(e.IdleAt, now, s.margin); ok && now <= math.MaxInt64-int64(ttl) {
		it.expiresAt = now + int64(ttl)
	}
	lm[e.Key] = it
}

// load returns a copy of a live entry of the state map. s.mu is held.
func (s *Store) load(limiter, key string, now int64) (store.Entry, bool) {
	it, ok := get(s.state, limiter, key, now)
	if !ok {
		return store.Entry{}, false
	}
	e := it.Entry
	e.State = append([]byte(nil), e.State...)
	return e, true
}

// Load implements store.Store.
func (s *Store) Load(ctx context.Context, limiter, key string) (store.Entry, bool, error) {
	now, err := s.begin(ctx, limiter, key)
	if err != nil {
		return store.Entry{}, false, err
	}
	defer s.mu.Unlock()
	e, ok := s.load(limiter, key, now)
	return e, ok, nil
}

// LoadMany implements store.BatchLoader.
func (s *Store) LoadMany(ctx context.Context, limiter string, keys []string, out []store.Entry, found []bool) error {
	if len(out) < len(keys) || len(found) < len(keys) {
		return fmt.Errorf("memstore: LoadMany: %d keys, room for %d entries and %d flags", len(keys), len(out), len(found))
	}
	now, err := s.begin(ctx, limiter, keys...)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	for i, k := range keys {
		out[i], found[i] = s.load(limiter, k, now)
	}
	return nil
}

// Save implements store.Store.
func (s *Store) Save(ctx context.Context, limiter string, entries []store.Entry) error {
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
	}
	now, err := s.begin(ctx, limiter, keys...)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	for _, e := range entries {
		s.put(s.state, limiter, e, now)
	}
	return nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, limiter string, keys []string) error {
	if _, err := s.begin(ctx, limiter, keys...); err != nil {
		return err
	}
	defer s.mu.Unlock()
	for _, k := range keys {
		delete(s.state[limiter], k)
	}
	return nil
}

// Update implements store.Updater: fn runs once, under the store's lock.
func (s *Store) Update(ctx context.Context, limiter, key string, fn store.UpdateFunc) error {
	now, err := s.begin(ctx, limiter, key)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	cur, ok := s.load(limiter, key, now)
	if !ok {
		cur = store.Entry{Key: key}
	}
	next, write := fn(cur, ok)
	if write {
		next.Key = key
		s.put(s.state, limiter, next, now)
	}
	return nil
}

// CheckGCRA implements store.AtomicGCRA with g.Step under the store's lock.
func (s *Store) CheckGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error) {
	if _, _, err := gcrastep.Args(g, cost); err != nil {
		return algorithm.Decision{}, err
	}
	clockNow, err := s.begin(ctx, limiter, key)
	if err != nil {
		return algorithm.Decision{}, err
	}
	defer s.mu.Unlock()
	tat := g.Fresh(now)
	if it, ok := get(s.gcra, limiter, key, clockNow); ok {
		tat = it.IdleAt
	}
	next, d, changed := g.Step(tat, now, cost)
	if changed {
		s.put(s.gcra, limiter, store.Entry{Key: key, IdleAt: next}, clockNow)
	}
	return d, nil
}

// Ping implements store.Pinger: it fails while the store is failing (Fail)
// or closed.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.begin(ctx, "-"); err != nil {
		return err
	}
	s.mu.Unlock()
	return nil
}

// Cleanup implements store.Cleaner.
func (s *Store) Cleanup(ctx context.Context) (int, error) {
	now, err := s.begin(ctx, "-")
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	n := 0
	for _, m := range []map[string]map[string]item{s.state, s.gcra} {
		for _, lm := range m {
			for k, it := range lm {
				if now > it.expiresAt {
					delete(lm, k)
					n++
				}
			}
		}
	}
	return n, nil
}

// Close implements store.Store: later calls return store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.state, s.gcra = nil, nil
	s.mu.Unlock()
	return nil
}
