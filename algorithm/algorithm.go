// Package algorithm holds Flux's rate-limiting algorithms as pure step
// functions of (state, now, cost, limit): no clock, no locks, no goroutines.
// A shard owns a map of per-key states and runs an Algorithm over them.
//
// Every algorithm fills every Decision field with the same meaning, can apply
// an admission decided elsewhere without deciding (cluster gossip), says when
// a state has become equal to a fresh key (so it can be evicted losslessly),
// re-expresses a state under a new limit, and encodes its state for stores.
package algorithm

import "time"

// Decision is the answer to one request (flux.Decision is an alias of it).
// Every algorithm fills every field with the same meaning.
type Decision struct {
	// Allowed reports whether the request was admitted (for a peek, cost 0:
	// whether a cost-1 request would be admitted now).
	Allowed bool
	// Limit is the capacity: the cost-1 requests a fresh key admits at once
	// (floor(Burst)+1 for GCRA).
	Limit int
	// Remaining is how many cost-1 requests would be admitted right now,
	// after this decision. It never exceeds Limit.
	Remaining int
	// RetryAfter is 0 when Allowed; otherwise the wait after which this same
	// request would be admitted, rounded up: a caller that waits exactly
	// RetryAfter is admitted if nothing else was admitted meanwhile.
	RetryAfter time.Duration
	// ResetAfter is the time until the key is back at full capacity.
	ResetAfter time.Duration
	// Delay is how long the caller should wait before acting on an admitted
	// request so that admitted requests leave at the limit's rate. Only
	// traffic-shaping algorithms (the leaky bucket) set it; it is zero for
	// the others.
	Delay time.Duration
}

// Algorithm is one rate-limiting policy with its parameters compiled in, over
// per-key states of type S. All methods are pure: they read only their
// arguments and the receiver's parameters, so an Algorithm value is safe for
// simultaneous use.
//
// Times are Unix nanoseconds; costs are whole requests.
type Algorithm[S any] interface {
	// Name is the algorithm's configuration name ("gcra", ...).
	Name() string
	// Capacity is the largest cost a fresh key admits at once.
	Capacity() int64
	// Fresh is the state of a key never seen before, at now.
	Fresh(now int64) S
	// Step decides a request of the given cost at now. Cost 0 is a peek: it
	// reports what a cost-1 request would get and never changes the state.
	// A denial never changes the state. changed reports whether the returned
	// state differs from s. Callers keep 0 ≤ cost ≤ Capacity().
	Step(s S, now, cost int64) (next S, d Decision, changed bool)
	// Apply adds an admission of cost decided elsewhere at time at, without
	// deciding: the additive merge cluster gossip needs.
	Apply(s S, at, cost int64) S
	// IdleAt is the time from which s is equal to a fresh key: from then on
	// the key can be forgotten without losing anything.
	IdleAt(s S) int64
	// Rebase re-expresses s, a state kept under prev, under this algorithm's
	// limit at now, so that a key keeps what it has used and no key keeps an
	// allowance the new limit would not give it. prev is of the same
	// concrete type as the receiver.
	Rebase(s S, now int64, prev Algorithm[S]) S
	// AppendState appends s's binary encoding to dst.
	AppendState(dst []byte, s S) []byte
	// DecodeState decodes what AppendState wrote; it returns an error
	// wrapping flux.ErrInvalidState for anything else.
	DecodeState(b []byte) (S, error)
}

// StepperInto is an optional capability of an Algorithm: Step writing the
// decision into *d instead of returning it, which saves copying a Decision
// several times per check on the shard's hot path. Shards use it when the
// algorithm has it; it must agree exactly with Step.
type StepperInto[S any] interface {
	StepInto(s S, now, cost int64, d *Decision) (next S, changed bool)
}

// satAdd returns a+b, saturated at the int64 bounds.
func satAdd(a, b int64) int64 {
	c := a + b
	if (c > a) != (b > 0) {
		if b > 0 {
			return 1<<63 - 1
		}
		return -1 << 63
	}
	return c
}
