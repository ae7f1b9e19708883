package flux

import (
	"fmt"
	"log/slog"
	"runtime"
	"time"

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
	persist     *shard.Persistence // store.go
	atomic      *AtomicStoreConfig // storeengine.go
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
