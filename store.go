package flux

import (
	"time"

	"github.com/fluxlimiter/flux/failure"
	"github.com/fluxlimiter/flux/shard"
	"github.com/fluxlimiter/flux/store"
)

// StoreMode says how a limiter uses its store (StoreConfig.Mode).
type StoreMode uint8

// The store modes.
const (
	// StoreWriteBehind keeps the state in the limiter's memory and saves
	// the keys that changed every FlushEvery, in batches: a restart loses
	// at most one FlushEvery of admissions (Close saves everything). It is
	// the default and the fastest.
	StoreWriteBehind StoreMode = iota
	// StoreWriteThrough answers a decision that admitted something only
	// once its state is saved, so a crash loses nothing that was admitted.
	StoreWriteThrough
	// StoreAtomic lets the store decide every check (Store must implement
	// store.AtomicGCRA: redisstore, pgstore, natskv and memstore do), so
	// that limiters in several processes sharing the store and Limiter
	// enforce one exact limit together. GCRA only: New fails with
	// ErrInvalidOption for another algorithm, and SetLimit with
	// ErrAlgorithmChange.
	//
	// Each check is a store round trip made from the caller's goroutine
	// (a CheckAsync from one of the limiter's), never from a shard. When
	// the store implements store.AtomicGCRABatch, a batch is one pipeline
	// and concurrent single checks are pipelined together too; otherwise a
	// batch is sent as concurrent calls, the requests for one key in
	// order. The limiter's shards hold only the local fallback, a mirror
	// of what the store answered (for failure.Local): Len and Stats describe
	// that mirror and Cleanup cleans it, and Stats counts each store check
	// as a load. ApplyEach, Snapshot and Restore have nothing to do (the state
	// lives in the store) and return at once. Admissions decided by the
	// failure policy while the store is down are not written to it
	// afterwards.
	StoreAtomic
)

// StoreConfig connects a Limiter to a store (WithStore). Store and Limiter
// are required; zero durations take the defaults.
//
// Outside StoreAtomic, a key the limiter does not hold is loaded before it
// is decided: its requests wait (other keys are served meanwhile), and
// concurrent requests share one load. A load that fails or times out is
// never taken as "this key is fresh": OnFailure decides.
type StoreConfig struct {
	// Store is the backend: one of the store/ packages (memstore,
	// redisstore, pgstore, natskv) or any store.Store.
	Store store.Store
	// Limiter is the namespace of this limiter's keys in the store. Every
	// process using the same store, namespace and limit shares the state.
	Limiter string
	// Mode is StoreWriteBehind (the default), StoreWriteThrough or
	// StoreAtomic.
	Mode StoreMode
	// FlushEvery is the write-behind period, and how often a store that is
	// down is probed (100 ms if zero). While it is down no decision waits
	// for it: OnFailure decides at once.
	FlushEvery time.Duration
	// Timeout bounds every store call a decision waits for (50 ms if zero;
	// a batch shares one Timeout).
	Timeout time.Duration
	// OnFailure is the policy when the store fails or does not answer in
	// time. failure.Local (the default) decides from the limiter's memory:
	// a key it holds by its state, a key it remembers as fresh (see
	// Remember) as a fresh key, and denies any other key, so a restart
	// never forgives; under write-through an admission whose save fails
	// stays admitted and the save is retried. failure.Open decides held
	// and remembered keys from memory too and admits any other key.
	// failure.Closed denies; under write-through an admission whose save
	// fails is denied and rolled back.
	OnFailure failure.Policy
	// Remember bounds how many keys each shard remembers as fresh after
	// dropping their state (262144 if zero; negative: none): keys the
	// sweep, an eviction or a cleanup forgot while they equalled a fresh
	// key, and keys the store answered for as fresh. It is what lets
	// failure.Local admit honest users whose idle state was swept while
	// the store is down. Each remembered key costs 9 to 18 bytes.
	Remember int
	// RetryAfter is what a denial caused by the store reports (1 s if
	// zero).
	RetryAfter time.Duration
	// Backoff, for StoreAtomic, is how long checks take the failure policy
	// at once after a store failure before the store is tried again
	// (FlushEvery's default if zero).
	Backoff time.Duration

	// Through selects write-through.
	//
	// Deprecated: use Mode: StoreWriteThrough.
	Through bool
}

// WithStore keeps the limiter's state in a store so that it survives
// restarts, or, with StoreAtomic, lets the store decide (see StoreConfig).
// A limiter has at most one store.
func WithStore(cfg StoreConfig) Option {
	return func(o *options) {
		switch {
		case cfg.Store == nil:
			o.fail("WithStore without a store")
			return
		case cfg.Limiter == "":
			o.fail("WithStore needs the limiter's name (its namespace in the store)")
			return
		case cfg.FlushEvery < 0 || cfg.Timeout < 0 || cfg.RetryAfter < 0 || cfg.Backoff < 0:
			o.fail("negative store interval")
			return
		case !cfg.OnFailure.Valid():
			o.fail("unknown store failure policy %d", cfg.OnFailure)
			return
		case cfg.Mode > StoreAtomic:
			o.fail("unknown store mode %d", cfg.Mode)
			return
		case cfg.Through && cfg.Mode == StoreAtomic:
			o.fail("Through with StoreAtomic: choose one Mode")
			return
		}
		if cfg.Mode == StoreAtomic {
			st, ok := cfg.Store.(store.AtomicGCRA)
			if !ok {
				o.fail("StoreAtomic needs a store that implements store.AtomicGCRA, not %T", cfg.Store)
				return
			}
			o.setAtomic(AtomicStoreConfig{Store: st, Limiter: cfg.Limiter, Timeout: cfg.Timeout,
				OnFailure: cfg.OnFailure, RetryAfter: cfg.RetryAfter, Backoff: cfg.Backoff})
			return
		}
		o.setPersist(&shard.Persistence{
			Store:      cfg.Store,
			Limiter:    cfg.Limiter,
			Through:    cfg.Mode == StoreWriteThrough || cfg.Through,
			FlushEvery: cfg.FlushEvery,
			Timeout:    cfg.Timeout,
			OnFailure:  shardFailure(cfg.OnFailure),
			RetryAfter: cfg.RetryAfter,
			Remember:   cfg.Remember,
		})
	}
}

func (o *options) setPersist(p *shard.Persistence) {
	if o.persist != nil || o.atomic != nil {
		o.fail("more than one store")
		return
	}
	o.persist = p
}

func (o *options) setAtomic(cfg AtomicStoreConfig) {
	if o.persist != nil || o.atomic != nil {
		o.fail("more than one store")
		return
	}
	o.atomic = &cfg
}

// shardFailure is p in the shard's terms.
func shardFailure(p failure.Policy) shard.Failure {
	switch p {
	case failure.Open:
		return shard.FailOpen
	case failure.Closed:
		return shard.FailClosed
	}
	return shard.FailLocal
}
