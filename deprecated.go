package flux

// The names in this file are kept so that code written against earlier
// versions keeps compiling, as the README's compatibility policy promises.
// Each says what replaces it; they will be removed in a later major
// version. Nothing in this module uses them.

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/fluxlimiter/flux/failure"
	"github.com/fluxlimiter/flux/internal/errs"
	"github.com/fluxlimiter/flux/shard"
	"github.com/fluxlimiter/flux/store"
)

// ErrCostExceedsBurst is ErrCostExceedsCapacity under its former name (the
// same error).
//
// Deprecated: use ErrCostExceedsCapacity. Window algorithms have no burst,
// and the error's message and wire reason always said capacity.
var ErrCostExceedsBurst = ErrCostExceedsCapacity

// The sentinels of single Limit fields. Each is still returned, wrapped,
// and still matched by errors.Is; each also matches ErrInvalidLimit.
var (
	// ErrInvalidRate: Rate is not a finite number with 0 < Rate ≤ 1e9.
	//
	// Deprecated: match ErrInvalidLimit; the message names the field.
	ErrInvalidRate = errs.InvalidRate
	// ErrInvalidBurst: Burst is negative, not finite, or too large.
	//
	// Deprecated: match ErrInvalidLimit; the message names the field.
	ErrInvalidBurst = errs.InvalidBurst
	// ErrInvalidAlgorithm: Limit.Algorithm names no algorithm.
	//
	// Deprecated: match ErrInvalidLimit; the message names the field.
	ErrInvalidAlgorithm = errs.InvalidAlgorithm
	// ErrInvalidWindow: a window parameter is unusable or given to an
	// algorithm that takes none.
	//
	// Deprecated: match ErrInvalidLimit; the message names the field.
	ErrInvalidWindow = errs.InvalidWindow
)

// ErrInvalidOption is ErrInvalidArgument under its former name (the same
// error).
//
// Deprecated: use ErrInvalidArgument, which names what every method and
// option reports for an unusable value.
var ErrInvalidOption = ErrInvalidArgument

// DefaultMaxKeyLen is the longest key accepted without WithMaxKeyLen.
//
// Deprecated: the defaults are stated on the options (WithMaxKeyLen).
const DefaultMaxKeyLen = defaultMaxKeyLen

// DefaultOverloadWait is how long a check waits for room in a full shard
// mailbox without WithOverloadWait.
//
// Deprecated: the defaults are stated on the options (WithOverloadWait).
const DefaultOverloadWait = defaultOverloadWait

// Algorithms returns the names of every algorithm, GCRA first.
//
// Deprecated: the algorithms are the constants of type Algorithm; an
// unknown name fails Limit.Validate with ErrInvalidLimit.
func Algorithms() []Algorithm { return slices.Clone(algorithms) }

// DefaultShards returns the number of shards a Limiter gets without
// WithShards: GOMAXPROCS/2, at least 1.
//
// Deprecated: the default is documented on WithShards; a Limiter's shard
// count is len(l.Stats()).
func DefaultShards() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// CheckBatchEach is CheckBatch that reports the items failing at run time
// in itemErrs, while an invalid item still fails the whole batch.
//
// Deprecated: use CheckEach, which reports invalid items per item too, so
// that no caller has to split the batch and try again.
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
//
// Deprecated: use ApplyEach, which applies the valid updates and reports
// each invalid one, so that one bad update from a peer does not hold back
// the others.
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

// ShardStats returns each shard's counters (keys held, mailbox depth,
// evictions, sweeps, refusals, contained panics, clock errors).
//
// Deprecated: use Stats, whose type belongs to this package.
func (l *Limiter) ShardStats() []shard.Stats { return l.eng.stats() }

// StoreStats adds up the shards' store counters (zero without a store).
//
// Deprecated: use Stats, which reports the store counters per shard.
func (l *Limiter) StoreStats() shard.StoreStats {
	var t shard.StoreStats
	for _, st := range l.eng.storeStats() {
		t.Loads += st.Loads
		t.LoadErrors += st.LoadErrors
		t.Saves += st.Saves
		t.SaveErrors += st.SaveErrors
		t.Fallbacks += st.Fallbacks
		t.Foreign += st.Foreign
		t.Dirty += st.Dirty
	}
	return t
}

// StoreFailure is the store's failure policy.
//
// Deprecated: use failure.Policy, the one vocabulary of the store, the
// cluster and httplimit.
type StoreFailure = failure.Policy

// The store failure policies under their former names.
const (
	// Deprecated: use failure.Local.
	StoreFailLocal = failure.Local
	// Deprecated: use failure.Open.
	StoreFailOpen = failure.Open
	// Deprecated: use failure.Closed.
	StoreFailClosed = failure.Closed
)

// AtomicStoreConfig connects a Limiter to a store that decides every check
// itself (WithAtomicStore). Its fields mean what StoreConfig's do.
//
// Deprecated: use StoreConfig with Mode StoreAtomic.
type AtomicStoreConfig struct {
	Store      store.AtomicGCRA
	Limiter    string
	Timeout    time.Duration
	OnFailure  StoreFailure
	RetryAfter time.Duration
	Backoff    time.Duration
}

// WithAtomicStore makes the store decide every check.
//
// Deprecated: use WithStore with Mode StoreAtomic: a limiter has one store
// option, and two could contradict each other.
func WithAtomicStore(cfg AtomicStoreConfig) Option {
	return func(o *options) {
		switch {
		case cfg.Store == nil:
			o.fail("WithAtomicStore without a store")
		case cfg.Limiter == "":
			o.fail("WithAtomicStore needs the limiter's name (its namespace in the store)")
		case cfg.Timeout < 0 || cfg.RetryAfter < 0 || cfg.Backoff < 0:
			o.fail("negative store interval")
		case !cfg.OnFailure.Valid():
			o.fail("unknown store failure policy %d", cfg.OnFailure)
		default:
			o.setAtomic(cfg)
		}
	}
}

// CheckFunc is one check of cost for key, as CheckN does it.
//
// Deprecated: see Middleware.
type CheckFunc func(ctx context.Context, key string, cost int) (Decision, error)

// Middleware wraps a single check: it may change the key and cost,
// short-circuit with its own Decision, or look at the result.
//
// Deprecated: Hooks are the one extension mechanism: they see every check,
// batches and async checks included, which middleware skipped. To change
// or answer checks, wrap the Limiter in a type of your own.
type Middleware func(next CheckFunc) CheckFunc

// WithMiddleware adds a middleware around single checks (Check, CheckN,
// Peek); the first added is the outermost. Batches and async checks bypass
// it. A middleware that panics fails the check with ErrPanic.
//
// Deprecated: see Middleware.
func WithMiddleware(mw Middleware) Option {
	return func(o *options) {
		if mw != nil {
			o.middleware = append(o.middleware, mw)
		}
	}
}

// CountFuture is a Cleanup in flight (CleanupAsync).
//
// Deprecated: see CleanupAsync.
type CountFuture struct {
	done chan struct{}
	n    int
	err  error
}

// CleanupAsync runs Cleanup in the background and returns at once. The
// limiter owns the goroutine: Close waits for it.
//
// Deprecated: run Cleanup in a goroutine of your own; the background sweep
// (WithSweep) already cleans idle keys continuously.
func (l *Limiter) CleanupAsync(ctx context.Context, staleAfter time.Duration) *CountFuture {
	f := &CountFuture{done: make(chan struct{})}
	l.asyncMu.Lock()
	defer l.asyncMu.Unlock()
	if l.closed.Load() {
		f.err = ErrClosed
		close(f.done)
		return f
	}
	l.async.Go(func() {
		defer close(f.done)
		f.n, f.err = l.Cleanup(ctx, staleAfter)
	})
	return f
}

// Wait returns the number of keys removed once the cleanup is over, or an
// error if ctx ends first (the cleanup goes on). Safe for simultaneous use.
//
// Deprecated: see CleanupAsync.
func (f *CountFuture) Wait(ctx context.Context) (int, error) {
	select {
	case <-f.done:
		return f.n, f.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
