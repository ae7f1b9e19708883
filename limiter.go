// Package flux is an exact, fast rate limiter for Go services.
//
// A Limiter spreads keys over shard goroutines by a hash. Each shard owns
// the state of its keys in a hash table of its own and answers requests
// sent over its mailbox, so no lock guards the state and a check costs one
// channel round trip. CheckBatch sends one message per shard for a whole
// batch, which is the fast path when there is more than one key to check
// at a time; the async API (CheckAsync, Future) lets one goroutine keep
// many checks in flight.
//
// The default algorithm is GCRA as FluxLimiter defines it: a Limit of Rate
// requests per second with Burst extra requests admits Burst+1 requests at
// once after idle (floor(Burst)+1 when Burst is fractional), then one every
// 1/Rate seconds.
package flux

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/shard"
)

// DefaultMaxKeyLen is the longest key accepted unless WithMaxKeyLen says
// otherwise: 1 KiB.
const DefaultMaxKeyLen = 1024

// DefaultOverloadWait is how long a check waits for room in a full shard
// mailbox before it fails with ErrOverloaded, unless its context ends first
// or WithOverloadWait says otherwise.
const DefaultOverloadWait = time.Second

// Limit is a rate limit: an algorithm and its parameters.
//
// Algorithm selects the algorithm; the zero value is GCRA (docs/ALGORITHMS.md
// compares them all). GCRA, TokenBucket and LeakyBucket take Rate and Burst;
// SlidingWindowLog, SlidingWindow and FixedWindow take Limit and Window
// (FixedWindow may take Calendar and Location instead of Window). Fields the
// chosen algorithm does not take must be left zero: Validate reports them
// rather than ignore them.
//
// Rate is in requests per second, with 0 < Rate ≤ 1e9. Burst is the number
// of requests admitted beyond the steady rate, ≥ 0, and may be fractional.
// Internally the emission interval T is 1e9/Rate nanoseconds rounded to the
// nearest nanosecond and the tolerance τ is Burst·T rounded down. The
// rounding of T changes the effective rate by a relative error of at most
// 0.5/T = Rate/2e9: none below 1e3/s, under 0.05% at 1e6/s, up to 5% at
// 1e8/s and up to 50% near 1e9/s (T = 1 or 2 ns). The capacity after idle is
// floor(Burst) + 1 (the leaky bucket's queue holds floor(Burst)+1 requests).
//
// Limit is the number of requests admitted per window, from 1 to 2^31−1
// (65536 for the sliding window log, which keeps a timestamp per request),
// and is the capacity. Window is the window's length, up to about 146
// years; fixed windows of a given length are aligned to the Unix epoch.
type Limit struct {
	// Algorithm is the algorithm; "" means GCRA.
	Algorithm Algorithm
	// Rate is in requests per second (GCRA, token and leaky bucket).
	Rate float64
	// Burst is the requests admitted beyond the steady rate (GCRA, token
	// and leaky bucket).
	Burst float64
	// Limit is the requests admitted per window (window algorithms).
	Limit int
	// Window is the window's length (window algorithms).
	Window time.Duration
	// Calendar, instead of Window, aligns fixed windows to calendar
	// minutes, hours, days, weeks (from Monday) or months in Location.
	Calendar Calendar
	// Location is the time zone of Calendar windows; nil means UTC.
	Location *time.Location
}

// Capacity returns the requests a fresh key admits at once — floor(Burst)+1
// for GCRA and the buckets, Limit for the window algorithms — or 0 if the
// limit is invalid.
func (l Limit) Capacity() int {
	c, _, err := l.compile()
	if err != nil {
		return 0
	}
	return int(c)
}

// Validate reports whether the limit is usable; the error wraps
// ErrInvalidAlgorithm, ErrInvalidRate, ErrInvalidBurst, ErrInvalidLimit or
// ErrInvalidWindow.
func (l Limit) Validate() error {
	_, _, err := l.compile()
	return err
}

// Decision is the answer to a check: Allowed, Limit, Remaining, RetryAfter,
// ResetAfter and Delay, documented on algorithm.Decision. A denial is a
// Decision with Allowed false, never an error. It is an alias so that
// shards can write decisions straight into a caller's slice.
type Decision = algorithm.Decision

// Update is an admission of Cost for Key decided elsewhere (by another
// node) at At, in Unix nanoseconds. Apply adds it without deciding.
type Update struct {
	Key  string
	At   int64
	Cost int
}

// KeyState is one key's state in a snapshot, encoded by the limiter's
// algorithm (for GCRA: the theoretical arrival time as 8 big-endian bytes).
type KeyState struct {
	Key   string
	State []byte
}

// Option configures a Limiter.
type Option func(*options)

type options struct {
	clock       clock.Clock
	shards      int
	maxKeys     int
	maxKeyLen   int
	mailbox     int
	wait        time.Duration
	sweepEvery  time.Duration
	sweepBudget int
	logger      *slog.Logger
	persist     *shard.Persistence // persist.go
	atomic      *AtomicStoreConfig // atomic.go
	hooks       []Hooks            // hooks.go
	middleware  []Middleware       // hooks.go
	err         error
}

// WithClock sets the clock (default: a clock.System created by New).
func WithClock(c clock.Clock) Option {
	return func(o *options) {
		if c == nil {
			o.err = fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		o.clock = c
	}
}

// DefaultShards is the number of shards a Limiter gets without WithShards:
// GOMAXPROCS/2, at least 1.
func DefaultShards() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// WithShards sets the number of shard goroutines. The default,
// DefaultShards(), is half of GOMAXPROCS (at least one): every shard handoff
// costs a goroutine switch, and callers need CPUs too. On a 2-CPU machine one
// shard answered 64-key batches about 30 % faster per key than two, for
// single and parallel callers alike, and single checks equally fast.
func WithShards(n int) Option {
	return func(o *options) {
		if n < 1 || n > 1<<16 {
			o.err = fmt.Errorf("%w: %d shards (want 1 to 65536)", ErrInvalidOption, n)
		}
		o.shards = n
	}
}

// WithMaxKeys bounds the keys held to about n, split evenly over the shards
// (each holds at most ceil(n/shards)). A shard that is full makes room by
// evicting keys whose state equals a fresh key, which loses nothing; if it
// finds none, the request for the new key fails with ErrFull. Keys already
// held are never evicted while they are throttled. 0 means no bound.
func WithMaxKeys(n int) Option {
	return func(o *options) {
		if n < 0 {
			o.err = fmt.Errorf("%w: max keys %d", ErrInvalidOption, n)
		}
		o.maxKeys = n
	}
}

// WithMaxKeyLen sets the longest key accepted, in bytes (default
// DefaultMaxKeyLen). Longer keys fail with ErrKeyTooLong.
func WithMaxKeyLen(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.err = fmt.Errorf("%w: max key length %d", ErrInvalidOption, n)
		}
		o.maxKeyLen = n
	}
}

// WithMailbox sets each shard's mailbox capacity (default 1024 messages).
func WithMailbox(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.err = fmt.Errorf("%w: mailbox %d", ErrInvalidOption, n)
		}
		o.mailbox = n
	}
}

// WithOverloadWait bounds how long a request waits for room in a full
// shard mailbox before failing with ErrOverloaded (default
// DefaultOverloadWait). 0 waits as long as the request's context allows.
func WithOverloadWait(d time.Duration) Option {
	return func(o *options) {
		if d < 0 {
			o.err = fmt.Errorf("%w: overload wait %v", ErrInvalidOption, d)
		}
		o.wait = d
	}
}

// WithSweep sets the background sweep that forgets idle keys: every period
// each shard visits at most budget keys, continuing where it stopped, and
// removes those whose state equals a fresh key (default: 1s and 1024). A
// negative period turns the sweep off.
func WithSweep(every time.Duration, budget int) Option {
	return func(o *options) {
		if every == 0 || budget < 1 {
			o.err = fmt.Errorf("%w: sweep every %v, budget %d", ErrInvalidOption, every, budget)
		}
		o.sweepEvery, o.sweepBudget = every, budget
	}
}

// WithLogger sets where the limiter reports contained panics (default:
// nowhere; the library logs nothing unless given a logger).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// ErrInvalidOption: an option was given an unusable value.
var ErrInvalidOption = errors.New("flux: invalid option")

// ErrInvalidArgument: a method was given an unusable argument, such as an
// out slice shorter than the requests or a negative duration.
var ErrInvalidArgument = errors.New("flux: invalid argument")

// Limiter is a sharded rate limiter. All its methods are safe for
// simultaneous use by multiple goroutines. Create one with New and release
// it with Close.
type Limiter struct {
	eng       engine
	limit     atomic.Pointer[Limit]
	capacity  atomic.Int64
	maxKeyLen int
	closed    atomic.Bool
	closeOnce sync.Once
	setMu     sync.Mutex // one SetLimit at a time
	cleanMu   sync.Mutex // one Cleanup at a time: shards keep one cleanup pass
	asyncMu   sync.Mutex // orders async.Go against Close
	async     sync.WaitGroup
	ext       *extension // hooks and middleware (hooks.go); nil if none
}

// New returns a Limiter enforcing limit for every key. It starts the shard
// goroutines; call Close to stop them.
func New(limit Limit, opts ...Option) (*Limiter, error) {
	o := options{maxKeyLen: DefaultMaxKeyLen, wait: DefaultOverloadWait}
	for _, opt := range opts {
		opt(&o)
	}
	if o.err != nil {
		return nil, o.err
	}
	if o.clock == nil {
		o.clock = clock.NewSystem()
	}
	if o.shards == 0 {
		o.shards = DefaultShards()
	}
	capacity, start, err := limit.compile()
	if err != nil {
		return nil, err
	}
	l := &Limiter{maxKeyLen: o.maxKeyLen}
	if l.eng, err = startEngine(limit, start, o); err != nil {
		return nil, err
	}
	l.limit.Store(&limit)
	l.capacity.Store(capacity)
	l.ext = newExtension(l, &o)
	return l, nil
}

// Limit returns the limit in force.
func (l *Limiter) Limit() Limit { return *l.limit.Load() }

// validate checks one request before it is sent to a shard. Keys and
// costs are validated here and nowhere else: single checks, batches,
// futures and Validate all come through it.
func (l *Limiter) validate(key string, cost int) error {
	if err := l.validateKey(key); err != nil {
		return err
	}
	switch {
	case cost < 0:
		return fmt.Errorf("%w: %d", ErrInvalidCost, cost)
	case int64(cost) > l.capacity.Load():
		return fmt.Errorf("%w: cost %d, capacity %d", ErrCostExceedsCapacity, cost, l.capacity.Load())
	}
	return nil
}

func (l *Limiter) validateKey(key string) error {
	switch {
	case len(key) == 0:
		return ErrEmptyKey
	case len(key) > l.maxKeyLen:
		return fmt.Errorf("%w: %d bytes (max %d)", ErrKeyTooLong, len(key), l.maxKeyLen)
	}
	return nil
}

// validateUpdate checks an admission made elsewhere. Its cost may exceed
// the capacity: a peer publishes the sum of what it admitted in a while.
func (l *Limiter) validateUpdate(u *Update) error {
	if err := l.validateKey(u.Key); err != nil {
		return err
	}
	if u.Cost < 0 {
		return fmt.Errorf("%w: %d", ErrInvalidCost, u.Cost)
	}
	return nil
}

// Validate reports whether the limiter would accept r, as CheckBatch
// validates each item, without deciding anything: the error wraps
// ErrEmptyKey, ErrKeyTooLong, ErrInvalidCost or ErrCostExceedsCapacity.
// It is for callers that route a request elsewhere before it is decided
// (the cluster forwards it to the key's owner) and want it refused here.
func (l *Limiter) Validate(r Request) error { return l.validateRequest(&r) }

// Check is shorthand for CheckN(ctx, key, 1).
func (l *Limiter) Check(ctx context.Context, key string) (Decision, error) {
	return l.CheckN(ctx, key, 1)
}

// CheckN reports whether a request of cost n for key is admitted now, and
// records it if so. n = 0 peeks (see Peek). A cost above the capacity fails
// with ErrCostExceedsBurst rather than being denied, since no wait would
// ever admit it. The call returns early with an error if ctx ends first.
func (l *Limiter) CheckN(ctx context.Context, key string, n int) (Decision, error) {
	if l.ext != nil {
		return l.ext.run(ctx, key, n)
	}
	return l.checkN(ctx, key, n)
}

// checkN is CheckN without hooks and middleware.
func (l *Limiter) checkN(ctx context.Context, key string, n int) (Decision, error) {
	if l.closed.Load() {
		return Decision{}, ErrClosed
	}
	if err := l.validate(key, n); err != nil {
		return Decision{}, err
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, err
	}
	return l.eng.check(ctx, key, int64(n))
}

// Peek reports the key's state as a check would, without consuming
// anything: Allowed and RetryAfter say what a cost-1 request would get now,
// and Limit, Remaining and ResetAfter are as for a check.
func (l *Limiter) Peek(ctx context.Context, key string) (Decision, error) {
	return l.CheckN(ctx, key, 0)
}

// CheckBatch checks many requests at once: out[i] answers reqs[i]. It
// sends one message per shard and each shard reads the clock once, so it is
// much cheaper per request than separate checks. Requests for the same key
// are decided in order. A Request whose Cost is unset costs 1; only one
// with Peek set peeks.
//
// Every item is validated before any is applied: an invalid item makes
// CheckBatch return a *BatchError naming its index, with nothing applied.
// out must be at least as long as reqs. If the batch fails later (a clock
// failure, overload, the context ending), some shards may have applied
// their part.
func (l *Limiter) CheckBatch(ctx context.Context, reqs []Request, out []Decision) error {
	if l.ext != nil && l.ext.hooked {
		return l.ext.batch(ctx, reqs, out, nil, false)
	}
	return l.checkBatch(ctx, reqs, out, nil, false)
}

// CheckEach is CheckBatch for callers that answer each item on its own,
// such as flux-node's batch endpoint and the cluster coordinator: an item
// that cannot be decided gets its error in errs[i] and every other item is
// still decided. That covers invalid items (ErrEmptyKey, ErrKeyTooLong,
// ErrInvalidCost, ErrCostExceedsCapacity) as well as items that fail at run
// time (ErrFull, or ErrCostExceedsCapacity after a concurrent SetLimit); the
// out entry of such an item is left zero. errs must be at least as long as
// reqs, and CheckEach sets each of its first len(reqs) entries (nil for an
// item decided), so no caller has to retry or split a batch. The returned
// error is for the batch as a whole (a closed limiter, the context ending,
// a clock failure, overload): errs then says nothing, and some shards may
// have applied their part.
func (l *Limiter) CheckEach(ctx context.Context, reqs []Request, out []Decision, errs []error) error {
	if len(errs) < len(reqs) {
		return fmt.Errorf("%w: errs has room for %d errors, reqs has %d", ErrInvalidArgument, len(errs), len(reqs))
	}
	errs = errs[:len(reqs)]
	clear(errs)
	if l.ext != nil && l.ext.hooked {
		return l.ext.batch(ctx, reqs, out, errs, true)
	}
	return l.checkBatch(ctx, reqs, out, errs, true)
}

// CheckBatchEach is CheckBatch that reports the items failing at run time
// in itemErrs, while an invalid item still fails the whole batch.
//
// Deprecated: use CheckEach, which reports invalid items per item too.
func (l *Limiter) CheckBatchEach(ctx context.Context, reqs []Request, out []Decision, itemErrs []error) error {
	if len(itemErrs) < len(reqs) {
		return fmt.Errorf("%w: itemErrs has room for %d errors, reqs has %d", ErrInvalidArgument, len(itemErrs), len(reqs))
	}
	if l.ext != nil && l.ext.hooked {
		return l.ext.batch(ctx, reqs, out, itemErrs[:len(reqs)], false)
	}
	return l.checkBatch(ctx, reqs, out, itemErrs[:len(reqs)], false)
}

// checkBatch is the one batch path. itemErrs, when not nil, receives the
// errors of items that fail at run time; eachInvalid says invalid items are
// reported there too instead of failing the batch.
func (l *Limiter) checkBatch(ctx context.Context, reqs []Request, out []Decision, itemErrs []error, eachInvalid bool) error {
	if l.closed.Load() {
		return ErrClosed
	}
	if len(out) < len(reqs) {
		return fmt.Errorf("%w: out has room for %d decisions, reqs has %d", ErrInvalidArgument, len(out), len(reqs))
	}
	// The common case in one pass of plain comparisons; validateRequest,
	// which builds the error, only for an item that fails them.
	maxLen, capacity := uint(l.maxKeyLen), l.capacity.Load()
	invalid := 0
	for i := range reqs {
		r := &reqs[i]
		if uint(len(r.Key))-1 >= maxLen || uint64(r.Cost) > uint64(capacity) || r.Peek {
			if err := l.validateRequest(r); err != nil {
				if !eachInvalid {
					return &BatchError{Index: i, Err: err}
				}
				itemErrs[i] = err
				invalid++
			}
		}
	}
	if invalid > 0 {
		return l.checkValid(ctx, reqs, out, itemErrs, invalid)
	}
	return l.run(ctx, reqs, out, itemErrs)
}

// checkValid decides the items of reqs that have no error yet, in one
// batch, and leaves the out entries of the others zero.
func (l *Limiter) checkValid(ctx context.Context, reqs []Request, out []Decision, itemErrs []error, invalid int) error {
	n := len(reqs) - invalid
	idx := make([]int, 0, n)
	sub := make([]Request, 0, n)
	for i := range reqs {
		if itemErrs[i] == nil {
			idx = append(idx, i)
			sub = append(sub, reqs[i])
		} else {
			out[i] = Decision{}
		}
	}
	subOut := make([]Decision, n)
	subErrs := make([]error, n)
	if err := l.run(ctx, sub, subOut, subErrs); err != nil {
		return err
	}
	for j, i := range idx {
		out[i], itemErrs[i] = subOut[j], subErrs[j]
	}
	return nil
}

// run sends validated requests to the shards and waits for their answers.
func (l *Limiter) run(ctx context.Context, reqs []Request, out []Decision, itemErrs []error) error {
	if len(reqs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.eng.start(ctx, reqs, out, ctx.Done() == nil)
	if err != nil {
		return err
	}
	return l.eng.finish(ctx, p, out, itemErrs)
}

// Apply records admissions decided elsewhere (another node's, for cluster
// gossip) without deciding: each adds its cost at its time to the key's
// state. Every update is validated first: an invalid one (an empty or too
// long key, a negative cost) makes Apply return a *BatchError naming it,
// with nothing applied.
func (l *Limiter) Apply(ctx context.Context, updates []Update) error {
	if l.closed.Load() {
		return ErrClosed
	}
	for i := range updates {
		if err := l.validateUpdate(&updates[i]); err != nil {
			return &BatchError{Index: i, Err: err}
		}
	}
	if len(updates) == 0 {
		return nil
	}
	return l.eng.apply(ctx, updates)
}

// ApplyEach is Apply for callers that handle each update on its own, such
// as the cluster's gossip: an invalid update gets its error in errs[i] and
// the others are applied. errs must be at least as long as updates, and
// ApplyEach sets each of its first len(updates) entries. The returned error
// is for the call as a whole (a closed limiter, the context ending, a
// clock failure).
func (l *Limiter) ApplyEach(ctx context.Context, updates []Update, errs []error) error {
	if len(errs) < len(updates) {
		return fmt.Errorf("%w: errs has room for %d errors, updates has %d", ErrInvalidArgument, len(errs), len(updates))
	}
	if l.closed.Load() {
		return ErrClosed
	}
	errs = errs[:len(updates)]
	invalid := 0
	for i := range updates {
		errs[i] = l.validateUpdate(&updates[i])
		if errs[i] != nil {
			invalid++
		}
	}
	valid := updates
	if invalid > 0 {
		valid = make([]Update, 0, len(updates)-invalid)
		for i := range updates {
			if errs[i] == nil {
				valid = append(valid, updates[i])
			}
		}
	}
	if len(valid) == 0 {
		return nil
	}
	return l.eng.apply(ctx, valid)
}

// SetLimit changes the limit of every key. Each shard re-bases its keys so
// that each keeps the number of requests it has used (measured in the new
// emission interval, capped at the new capacity): no key keeps an allowance
// the new limit would not give it, and none is forgiven (each algorithm's
// Rebase says how: window algorithms keep the count of the current window).
// If SetLimit returns an error, some shards may already use the new limit;
// call it again. The algorithm cannot change: a limit of another algorithm
// fails with ErrAlgorithmChange and changes nothing.
func (l *Limiter) SetLimit(ctx context.Context, limit Limit) error {
	if l.closed.Load() {
		return ErrClosed
	}
	if err := limit.Validate(); err != nil {
		return err
	}
	l.setMu.Lock()
	defer l.setMu.Unlock()
	capacity, err := l.eng.setLimit(ctx, limit)
	if err != nil {
		return err
	}
	l.limit.Store(&limit)
	l.capacity.Store(capacity)
	return nil
}

// Cleanup removes every key that has been idle (equal to a fresh key) for at
// least staleAfter, and reports how many it removed. Removing an idle key
// loses nothing. Shards are cleaned in parallel, each in steps of bounded
// size, so other requests are answered in between. The background sweep
// (WithSweep) does the same continuously for staleAfter = 0.
func (l *Limiter) Cleanup(ctx context.Context, staleAfter time.Duration) (int, error) {
	if l.closed.Load() {
		return 0, ErrClosed
	}
	if staleAfter < 0 {
		return 0, fmt.Errorf("%w: negative staleAfter %v", ErrInvalidArgument, staleAfter)
	}
	l.cleanMu.Lock()
	defer l.cleanMu.Unlock()
	var total atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for i := range l.eng.shardCount() {
		g.Go(func() error {
			n, err := l.eng.cleanup(gctx, i, staleAfter)
			total.Add(int64(n))
			return err
		})
	}
	err := g.Wait()
	return int(total.Load()), err
}

// Snapshot returns the state of every key that is not idle, encoded by the
// limiter's algorithm, for saving or for handing to another node.
func (l *Limiter) Snapshot(ctx context.Context) ([]KeyState, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	return l.eng.snapshot(ctx)
}

// Restore loads states produced by Snapshot (of a limiter with the same
// algorithm), replacing what this limiter holds for those keys.
func (l *Limiter) Restore(ctx context.Context, states []KeyState) error {
	if l.closed.Load() {
		return ErrClosed
	}
	return l.eng.restore(ctx, states)
}

// Len reports how many keys the limiter holds. It reads counters the shards
// publish after each message, without messaging them, so it is cheap and
// may lag in-flight requests slightly. It returns 0 after Close.
func (l *Limiter) Len() int {
	if l.closed.Load() {
		return 0
	}
	return l.eng.len()
}

// ShardStats returns each shard's counters (keys held, mailbox depth,
// evictions, sweeps, refusals, contained panics, clock errors).
func (l *Limiter) ShardStats() []shard.Stats { return l.eng.stats() }

// Close stops every shard and returns once all the limiter's goroutines
// have exited. Requests still queued fail with ErrClosed. A second Close
// returns nil; every other method called after Close returns ErrClosed.
func (l *Limiter) Close() error {
	l.closeOnce.Do(func() {
		l.asyncMu.Lock()
		l.closed.Store(true)
		l.asyncMu.Unlock()
		l.eng.stop()
		l.async.Wait()
	})
	return nil
}

// engine is the algorithm-independent face of a group of shards.
type engine interface {
	check(ctx context.Context, key string, cost int64) (Decision, error)
	checkAsync(ctx context.Context, key string, cost int64) (chan shard.Reply, <-chan struct{}, error)
	start(ctx context.Context, reqs []Request, out []Decision, direct bool) (*pending, error)
	finish(ctx context.Context, p *pending, out []Decision, itemErrs []error) error
	apply(ctx context.Context, ups []Update) error
	setLimit(ctx context.Context, lim Limit) (capacity int64, err error)
	cleanup(ctx context.Context, shard int, staleAfter time.Duration) (int, error)
	snapshot(ctx context.Context) ([]KeyState, error)
	restore(ctx context.Context, states []KeyState) error
	shardCount() int
	len() int
	stats() []shard.Stats
	storeStats() []shard.StoreStats
	stop()
}

// group is the engine for algorithms whose per-key state is S.
type group[S any] struct {
	shards  []*shard.Shard[S]
	seed    maphash.Seed
	compile func(Limit) (algorithm.Algorithm[S], error)
	alg     atomic.Pointer[algorithm.Algorithm[S]]
	pool    sync.Pool // *pending
}

func newGroup[S any](alg algorithm.Algorithm[S], o options, compile func(Limit) (algorithm.Algorithm[S], error)) *group[S] {
	g := &group[S]{seed: maphash.MakeSeed(), compile: compile}
	g.alg.Store(&alg)
	perShard := 0
	if o.maxKeys > 0 {
		perShard = (o.maxKeys + o.shards - 1) / o.shards
	}
	var onPanic func(any)
	if o.logger != nil {
		lg := o.logger
		onPanic = func(v any) { lg.Error("flux: shard handler panicked", "panic", v) }
	}
	g.shards = make([]*shard.Shard[S], o.shards)
	for i := range g.shards {
		g.shards[i] = shard.New(shard.Config[S]{
			ID:          i,
			Algorithm:   alg,
			Clock:       o.clock,
			Mailbox:     o.mailbox,
			MaxWait:     o.wait,
			MaxKeys:     perShard,
			SweepEvery:  o.sweepEvery,
			SweepBudget: o.sweepBudget,
			OnPanic:     onPanic,
			Persistence: o.persist,
		})
	}
	n := len(g.shards)
	g.pool.New = func() any {
		p := &pending{parts: make([]part, n), done: make(chan *shard.Batch, n)}
		for i := range p.parts {
			p.parts[i].b.Done = p.done
		}
		return p
	}
	return g
}

func (g *group[S]) index(key string) int {
	if len(g.shards) == 1 {
		return 0
	}
	hi, _ := bits.Mul64(maphash.String(g.seed, key), uint64(len(g.shards)))
	return int(hi)
}

func (g *group[S]) check(ctx context.Context, key string, cost int64) (Decision, error) {
	d, err := g.shards[g.index(key)].Check(ctx, key, cost)
	return Decision(d), err
}

func (g *group[S]) checkAsync(ctx context.Context, key string, cost int64) (chan shard.Reply, <-chan struct{}, error) {
	sh := g.shards[g.index(key)]
	rc, err := sh.CheckAsync(ctx, key, cost)
	return rc, sh.Done(), err
}

// pending is a batch in flight: one part per shard. It is pooled. When the
// caller's context can end (and the caller owns out), shards write into
// per-part scratch and finish copies; a batch abandoned mid-flight is then
// not returned to the pool, because shards may still write into it. When
// the context cannot end, or out belongs to a future, shards write straight
// into out.
type pending struct {
	parts  []part
	done   chan *shard.Batch
	sent   int
	direct bool
}

type part struct {
	b       shard.Batch
	idx     []int32
	scratch []Decision
}

// grow returns the part's scratch output with room for n decisions.
func (pt *part) grow(n int) []Decision {
	if cap(pt.scratch) < n {
		pt.scratch = make([]Decision, n, 2*n)
	}
	return pt.scratch[:n]
}

// start sends reqs to their shards. direct says the shards may write into
// out themselves (see pending).
func (g *group[S]) start(ctx context.Context, reqs []Request, out []Decision, direct bool) (*pending, error) {
	p := g.pool.Get().(*pending)
	p.sent, p.direct = 0, direct
	if len(p.parts) == 1 {
		// One shard: it reads reqs in place, in order.
		pt := &p.parts[0]
		pt.b.Reqs, pt.b.Sel, pt.b.Idx, pt.b.Errs, pt.b.Err, pt.idx = shardRequests(reqs), nil, nil, nil, nil, pt.idx[:0]
		if direct {
			pt.b.Out = out
		} else {
			pt.b.Out = pt.grow(len(reqs))
		}
		if err := g.shards[0].SendBatch(ctx, &pt.b); err != nil {
			pt.b.Reqs, pt.b.Out = nil, nil
			g.pool.Put(p)
			return nil, err
		}
		p.sent = 1
		return p, nil
	}
	sreqs := shardRequests(reqs)
	for i := range p.parts {
		pt := &p.parts[i]
		pt.b.Reqs, pt.b.Errs, pt.b.Err, pt.idx = sreqs, nil, nil, pt.idx[:0]
	}
	for i := range reqs {
		pt := &p.parts[g.index(reqs[i].Key)]
		pt.idx = append(pt.idx, int32(i))
	}
	for i := range p.parts {
		pt := &p.parts[i]
		n := len(pt.idx)
		if n == 0 {
			pt.b.Reqs = nil
			continue
		}
		pt.b.Sel = pt.idx
		if direct {
			pt.b.Out, pt.b.Idx = out, pt.idx
		} else {
			pt.b.Out, pt.b.Idx = pt.grow(n), nil
		}
		if err := g.shards[i].SendBatch(ctx, &pt.b); err != nil {
			if direct {
				// Parts already sent write into out: wait for them (queued
				// parts are always answered, even by a stopping shard).
				for range p.sent {
					<-p.done
				}
				p.sent = 0
			}
			if p.sent == 0 {
				for i := range p.parts { // drop the references to the caller's slices
					p.parts[i].b.Reqs, p.parts[i].b.Out = nil, nil
				}
				g.pool.Put(p)
			}
			return nil, err
		}
		p.sent++
	}
	return p, nil
}

func (g *group[S]) finish(ctx context.Context, p *pending, out []Decision, itemErrs []error) error {
	var first error
	for range p.sent {
		select {
		case b := <-p.done:
			if b.Err != nil && first == nil {
				first = b.Err
			}
		case <-ctx.Done():
			return ctx.Err() // p is abandoned: shards may still write into it
		}
	}
	var firstItem error
	firstIdx := len(out)
	one := len(p.parts) == 1
	for i := range p.parts {
		pt := &p.parts[i]
		if !p.direct {
			if one {
				copy(out, pt.b.Out)
			}
			for j, k := range pt.idx {
				out[k] = pt.b.Out[j]
			}
		}
		for j, err := range pt.b.Errs {
			if err == nil {
				continue
			}
			k := j
			if !one {
				k = int(pt.idx[j])
			}
			if itemErrs != nil {
				itemErrs[k] = err
			} else if k < firstIdx {
				firstIdx, firstItem = k, err
			}
		}
		pt.b.Out, pt.b.Reqs = nil, nil // drop the references to the caller's slices
	}
	g.pool.Put(p)
	if first == nil && firstItem != nil {
		first = &BatchError{Index: firstIdx, Err: firstItem}
	}
	return first
}

func (g *group[S]) apply(ctx context.Context, ups []Update) error {
	parts := make([]shard.Batch, len(g.shards))
	done := make(chan *shard.Batch, len(g.shards))
	for _, u := range ups {
		b := &parts[g.index(u.Key)]
		b.Items = append(b.Items, shard.Item{Key: u.Key, Cost: int64(u.Cost), At: u.At})
	}
	sent := 0
	for i := range parts {
		if len(parts[i].Items) == 0 {
			continue
		}
		parts[i].Done = done
		if err := g.shards[i].SendApply(ctx, &parts[i]); err != nil {
			return err
		}
		sent++
	}
	var first error
	for range sent {
		select {
		case b := <-done:
			if b.Err != nil && first == nil {
				first = b.Err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first
}

func (g *group[S]) setLimit(ctx context.Context, lim Limit) (int64, error) {
	alg, err := g.compile(lim)
	if err != nil {
		return 0, err
	}
	eg, ectx := errgroup.WithContext(ctx)
	for _, sh := range g.shards {
		eg.Go(func() error { return sh.SetAlgorithm(ectx, alg) })
	}
	if err := eg.Wait(); err != nil {
		return 0, err
	}
	g.alg.Store(&alg)
	return alg.Capacity(), nil
}

func (g *group[S]) cleanup(ctx context.Context, i int, staleAfter time.Duration) (int, error) {
	total := 0
	for start := true; ; start = false {
		n, done, err := g.shards[i].CleanupStep(ctx, staleAfter, 0, start)
		total += n
		if err != nil || done {
			return total, err
		}
	}
}

func (g *group[S]) snapshot(ctx context.Context) ([]KeyState, error) {
	alg := *g.alg.Load()
	var out []KeyState
	for _, sh := range g.shards {
		es, err := sh.Snapshot(ctx)
		if err != nil {
			return out, err
		}
		for _, e := range es {
			out = append(out, KeyState{Key: e.Key, State: alg.AppendState(nil, e.State)})
		}
	}
	return out, nil
}

func (g *group[S]) restore(ctx context.Context, states []KeyState) error {
	alg := *g.alg.Load()
	parts := make([][]shard.Entry[S], len(g.shards))
	for i, ks := range states {
		if len(ks.Key) == 0 {
			return &BatchError{Index: i, Err: ErrEmptyKey}
		}
		st, err := alg.DecodeState(ks.State)
		if err != nil {
			return &BatchError{Index: i, Err: err}
		}
		k := g.index(ks.Key)
		parts[k] = append(parts[k], shard.Entry[S]{Key: ks.Key, State: st})
	}
	for i, es := range parts {
		if len(es) == 0 {
			continue
		}
		if err := g.shards[i].Restore(ctx, es); err != nil {
			return err
		}
	}
	return nil
}

func (g *group[S]) shardCount() int { return len(g.shards) }

func (g *group[S]) len() int {
	n := 0
	for _, sh := range g.shards {
		n += sh.Len()
	}
	return n
}

func (g *group[S]) stats() []shard.Stats {
	out := make([]shard.Stats, len(g.shards))
	for i, sh := range g.shards {
		out[i] = sh.Stats()
	}
	return out
}

func (g *group[S]) storeStats() []shard.StoreStats {
	out := make([]shard.StoreStats, len(g.shards))
	for i, sh := range g.shards {
		out[i] = sh.StoreStats()
	}
	return out
}

func (g *group[S]) stop() {
	var wg sync.WaitGroup
	for _, sh := range g.shards {
		wg.Go(sh.Stop)
	}
	wg.Wait()
}
