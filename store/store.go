// Package store defines how Flux persists per-key algorithm states outside
// the process: a small required interface, Store, and optional capabilities
// that a backend may also implement and that callers discover with a type
// assertion, as database/sql/driver does:
//
//	if bl, ok := s.(store.BatchLoader); ok { ... }
//
// A Store keeps opaque states: the bytes an algorithm's AppendState wrote,
// plus IdleAt, the Unix nanosecond time from which the state equals a fresh
// key. Every backend expires an entry on its own once IdleAt has passed by
// a margin (per-key TTLs, or a periodic cleanup), so a monthly window and a
// one-second GCRA limit each live exactly as long as they matter.
//
// Backends live in their own packages, so that importing the root package
// (or this one) pulls in no client library: store/memstore (in memory, for
// tests), store/redisstore (Redis, go-redis v9), store/pgstore (PostgreSQL,
// pgx v5) and store/natskv (NATS JetStream KV). store/storetest is the
// conformance suite every backend runs.
//
// # Threading contract
//
// Every Store and every capability below is safe for simultaneous use by
// multiple goroutines. Calls on different keys may run in parallel. A Store
// does not order concurrent writes of one key: the last Save wins. Callers
// that need ordering (a shard saving one key) serialise their own calls;
// callers that need an atomic read-modify-write across processes use
// Updater or AtomicGCRA.
//
// Every method honours its context: when ctx ends, the call returns promptly
// with an error wrapping ctx.Err() (or the client library's own timeout
// error). An unreachable store is an error, never a hang and never "no
// entry": Load's found is false only when the store answered that the key
// has no entry.
//
// Slices passed in (entries, their State, keys) are not retained after a
// method returns; slices returned belong to the caller.
package store

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
)

// NoExpiry is the IdleAt of a state that never becomes equal to a fresh
// key on its own; backends keep such an entry until it is deleted.
const NoExpiry int64 = math.MaxInt64

// DefaultMargin is how long backends keep an entry after its IdleAt unless
// configured otherwise. It absorbs clock skew between the writers and the
// store: an entry is never removed while a node whose clock runs up to the
// margin behind could still read it as throttling.
const DefaultMargin = time.Minute

// Margin resolves a backend's configured margin: 0 means DefaultMargin and
// a negative value means none.
func Margin(m time.Duration) time.Duration {
	switch {
	case m == 0:
		return DefaultMargin
	case m < 0:
		return 0
	}
	return m
}

// Sentinel errors, matched with errors.Is. Backends wrap them with detail.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("flux: store closed")
	// ErrInvalidKey is returned for an empty key or limiter name, or one
	// the backend cannot represent (PostgreSQL rejects a limiter name
	// with a NUL byte or invalid UTF-8; keys are stored as bytes).
	ErrInvalidKey = errors.New("flux: store: invalid key or limiter name")
)

// Entry is one key's stored state.
type Entry struct {
	// Key is the client key, any non-empty byte string.
	Key string
	// State is the algorithm's encoding of the key's state
	// (algorithm.Algorithm.AppendState).
	State []byte
	// IdleAt is the Unix nanosecond time from which State equals a fresh
	// key (algorithm.Algorithm.IdleAt), or NoExpiry. Backends keep the
	// entry for TTL(IdleAt, now, margin) from the write, by their clock:
	// at least until IdleAt plus their margin.
	IdleAt int64
}

// Store is the interface every backend implements.
//
// Keys are namespaced by limiter: the same key under two limiter names is
// two entries. Neither limiter nor key may be empty.
type Store interface {
	// Load returns the key's entry. found is false when the store holds
	// none (never saved, deleted or expired). An entry whose IdleAt has
	// passed but that the backend has not yet expired may be returned: it
	// decodes to a state equal to a fresh key. err is non-nil when the
	// store could not answer; found is then false and means nothing.
	Load(ctx context.Context, limiter, key string) (e Entry, found bool, err error)
	// Save upserts entries. If a key appears more than once, the last
	// occurrence wins. Save is not atomic across entries: on error, some
	// entries may have been written. Saving no entries is a no-op.
	Save(ctx context.Context, limiter string, entries []Entry) error
	// Delete removes the keys' entries; missing keys are not an error.
	// Callers delete keys whose state has become equal to a fresh key;
	// a Delete racing with another process's Save of the same key may
	// remove that Save's state (last writer wins).
	Delete(ctx context.Context, limiter string, keys []string) error
	// Close releases what the Store opened and waits for its goroutines.
	// A client handed to the backend's constructor is not closed. Calls
	// after Close return ErrClosed; a second Close returns nil.
	Close() error
}

// BatchLoader is an optional capability: load many keys in about one round
// trip.
type BatchLoader interface {
	// LoadMany loads keys[i] into out[i] and found[i]; out and found must
	// have at least len(keys) elements. A key may appear more than once.
	// On error, out and found are unspecified.
	LoadMany(ctx context.Context, limiter string, keys []string, out []Entry, found []bool) error
}

// UpdateFunc computes a key's next entry from its current one. found is
// false when the key has no entry (cur is then the zero Entry with Key
// set). It returns write=false to leave the entry as it is.
//
// An UpdateFunc may be called several times for one Update (once per
// attempt when another writer changed the key in between), so it must not
// have side effects other than recording its latest result. next.Key is
// ignored.
type UpdateFunc func(cur Entry, found bool) (next Entry, write bool)

// Updater is an optional capability: an atomic read-modify-write of one
// key, serialised against every other Update of that key from any process
// sharing the store (compare-and-set by revision, WATCH/MULTI, or a row
// lock). It gives every algorithm, not only GCRA, an exact limit shared
// by several nodes, at the cost of one or more round trips per check.
type Updater interface {
	// Update runs fn on the key's current entry and, if fn asks to,
	// writes its result, retrying with a fresh read while another writer
	// wins the race. It returns when a write succeeded, when fn declined
	// to write, or with an error (ctx ended, store failed).
	Update(ctx context.Context, limiter, key string, fn UpdateFunc) error
}

// AtomicGCRA is an optional capability: the GCRA step of algorithm.GCRA
// executed inside the store in one round trip (a Lua script in Redis, one
// SQL statement in PostgreSQL), so that every process sharing the store
// enforces one exact limit.
//
// Its records are separate from those of Load/Save/Delete (they hold the
// TAT in the store's native number form): a limiter uses one mode or the
// other.
type AtomicGCRA interface {
	// CheckGCRA decides a request of the given cost for key at now (Unix
	// ns) under g, exactly as g.Step(tat, now, cost) would with the TAT
	// held by the store, and stores the new TAT when admitted. Cost 0
	// peeks and never writes. The Decision has every field of
	// algorithm.Decision filled as g.Step fills it. Backends may be
	// configured to read their own clock instead of now, so that nodes
	// with skewed clocks still share one exact limit.
	//
	// A negative cost is an error wrapping flux.ErrInvalidCost; a cost
	// above g.Capacity() one wrapping flux.ErrCostExceedsCapacity; a zero g
	// one wrapping flux.ErrInvalidLimit.
	CheckGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error)
}

// AtomicGCRABatch is an optional capability of an AtomicGCRA store: many
// checks under one limit and one now in about one round trip (pipelined),
// for flux.WithAtomicStore's batches.
type AtomicGCRABatch interface {
	// CheckGCRABatch decides the request of cost costs[i] for keys[i] into
	// out[i], exactly as CheckGCRA would, in order (a key may appear more
	// than once). errs[i] is set for an item that failed on its own; the
	// returned error is for the whole batch, and out and errs are then
	// unspecified. out and errs must have at least len(keys) elements.
	CheckGCRABatch(ctx context.Context, limiter string, g algorithm.GCRA, now int64, keys []string, costs []int64, out []algorithm.Decision, errs []error) error
}

// Pinger is an optional capability, as driver.Pinger: check that the store
// answers, for readiness probes.
type Pinger interface {
	// Ping returns nil when the store answered.
	Ping(ctx context.Context) error
}

// Cleaner is an optional capability of backends without native expiry:
// remove every entry whose IdleAt plus the margin has passed, by the
// backend's clock.
type Cleaner interface {
	// Cleanup removes expired entries and reports how many it removed.
	Cleanup(ctx context.Context) (removed int, err error)
}

// MaxTTL is the longest TTL a backend is asked to set: an entry that would
// need a longer one is kept without expiry instead (see TTL), which
// forgives nothing and keeps every backend's time arithmetic far from
// overflow.
const MaxTTL = 100 * 365 * 24 * time.Hour

// TTL returns how long a backend keeps an entry idle at idleAt that it
// writes at now: max(idleAt − now, 0) + margin (a negative margin counts
// as zero). So an entry is kept until margin after its IdleAt, or margin
// after it was written if it was already idle. expires is false for
// NoExpiry and when the TTL would exceed MaxTTL: such an entry is kept
// until deleted. Backends round the result up to their TTL resolution (and
// to at least one unit of it).
func TTL(idleAt, now int64, margin time.Duration) (ttl time.Duration, expires bool) {
	if idleAt == NoExpiry {
		return 0, false
	}
	d := idleAt - now
	if (idleAt >= 0) != (now >= 0) && (d >= 0) != (idleAt >= 0) { // overflowed
		if idleAt >= 0 {
			d = math.MaxInt64
		} else {
			d = 0
		}
	}
	d, m := max(d, 0), max(int64(margin), 0)
	if d > int64(MaxTTL) || m > int64(MaxTTL)-d {
		return 0, false
	}
	return time.Duration(d + m), true
}
