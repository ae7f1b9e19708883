package flux

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/shard"
)

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
