package flux

import (
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/shard"
)

// The defaults of the options, stated in each option's documentation.
const (
	defaultMaxKeyLen    = 1024
	defaultOverloadWait = time.Second
)

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
	middleware  []Middleware       // deprecated.go
	errs        []error            // every unusable option, reported together by New
}

// fail records an unusable option. New reports all of them at once, so a
// caller fixes every mistake in one go rather than one per run.
func (o *options) fail(format string, args ...any) {
	o.errs = append(o.errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, args...)...))
}

// defaultShards is the number of shards without WithShards.
func defaultShards() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// WithClock sets the clock (default: a clock.System created by New).
func WithClock(c clock.Clock) Option {
	return func(o *options) {
		if c == nil {
			o.fail("nil clock")
		}
		o.clock = c
	}
}

// WithShards sets the number of shard goroutines, from 1 to 65536. The
// default is half of GOMAXPROCS (at least one): every hand-off to a shard
// costs a goroutine switch, and the callers need CPUs too, so fewer shards
// than CPUs answer batches faster per key (bench/README.md has the
// figures).
func WithShards(n int) Option {
	return func(o *options) {
		if n < 1 || n > 1<<16 {
			o.fail("%d shards (want 1 to 65536)", n)
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
			o.fail("max keys %d", n)
		}
		o.maxKeys = n
	}
}

// WithMaxKeyLen sets the longest key accepted, in bytes (default 1024).
// Longer keys fail with ErrKeyTooLong.
func WithMaxKeyLen(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.fail("max key length %d", n)
		}
		o.maxKeyLen = n
	}
}

// WithMailbox sets each shard's mailbox capacity (default 1024 messages).
func WithMailbox(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.fail("mailbox %d", n)
		}
		o.mailbox = n
	}
}

// WithOverloadWait bounds how long a request waits for room in a full
// shard mailbox before failing with ErrOverloaded (default 1 s), unless
// its context ends first. 0 waits as long as the request's context allows.
func WithOverloadWait(d time.Duration) Option {
	return func(o *options) {
		if d < 0 {
			o.fail("overload wait %v", d)
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
			o.fail("sweep every %v, budget %d", every, budget)
		}
		o.sweepEvery, o.sweepBudget = every, budget
	}
}

// WithLogger sets where the limiter reports contained panics (default:
// nowhere; the library logs nothing unless given a logger).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }
