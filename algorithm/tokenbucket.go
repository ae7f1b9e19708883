package algorithm

import (
	"encoding/binary"
	"math"
)

// TokenState is a token bucket's per-key state: the bucket held Tokens at
// time At (Unix nanoseconds). Tokens are counted in nanoseconds of refill:
// one token is T units (T the emission interval), the bucket refills one
// unit per nanosecond up to τ+T units, and an admission of cost n takes n·T
// units. Everything is an integer, so nothing drifts. Tokens may be
// negative after remote admissions (Apply) pushed the bucket into debt.
type TokenState struct {
	At     int64
	Tokens int64
}

// TokenBucket is the token bucket: a bucket of Burst+1 tokens (floor(Burst)+1
// whole requests) that refills at Rate tokens per second; a request of cost
// n is admitted iff the bucket holds n tokens, and takes them.
//
// With the same rate and burst it is the same policy as GCRA in another
// representation (the bucket holds τ+T − (TAT−now) units): both admit
// exactly the same requests and report the same Decision, which the tests
// check. It exists for users who think in tokens, and its state says
// directly how many tokens a key has.
//
// A TokenBucket is safe for simultaneous use. Its zero value has capacity 0, so
// no request can pass; create one with NewTokenBucket.
type TokenBucket struct {
	g    GCRA  // parameters: T, τ and the capacity
	full int64 // τ+T: a full bucket, in units
	div  divisor
}

// NewTokenBucket compiles rate (tokens per second, 0 < rate ≤ 1e9) and burst
// (≥ 0, may be fractional) as NewGCRA does: T = 1e9/rate rounded to the
// nearest nanosecond, a full bucket holds τ+T units with τ = burst·T rounded
// down, and a fresh key admits floor(burst)+1 requests at once.
func NewTokenBucket(rate, burst float64) (TokenBucket, error) {
	g, err := NewGCRA(rate, burst)
	if err != nil {
		return TokenBucket{}, err
	}
	return TokenBucket{g: g, full: g.Tolerance() + g.Interval(), div: newDivisor(g.Interval())}, nil
}

// Name returns "token-bucket".
func (TokenBucket) Name() string { return "token-bucket" }

// Capacity returns floor(burst)+1.
func (b TokenBucket) Capacity() int64 { return b.g.Capacity() }

// Interval returns T, the nanoseconds of refill that make one token.
func (b TokenBucket) Interval() int64 { return b.g.Interval() }

// Full returns the units a full bucket holds: τ+T.
func (b TokenBucket) Full() int64 { return b.full }

// Fresh returns a bucket that has been full forever.
func (b TokenBucket) Fresh(int64) TokenState { return TokenState{At: math.MinInt64, Tokens: b.full} }

// level returns the units the bucket holds at now: the state's tokens plus
// the refill since At, at most full. A state stamped after now (a remote
// admission from a clock ahead of ours) is projected back linearly, which
// keeps the bucket exactly equivalent to GCRA.
func (b TokenBucket) level(s TokenState, now int64) int64 {
	return min(b.full, addSat(s.Tokens, subSat(now, s.At)))
}

// Step decides a request of the given cost at now.
func (b TokenBucket) Step(s TokenState, now, cost int64) (TokenState, Decision, bool) {
	var d Decision
	next, changed := b.StepInto(s, now, cost, &d)
	return next, d, changed
}

// StepInto is Step writing the decision into *d, which saves copying it
// on the shard's hot path (see StepperInto).
func (b TokenBucket) StepInto(s TokenState, now, cost int64, d *Decision) (TokenState, bool) {
	lv := b.level(s, now)
	need := satMul(max(cost, 1), b.g.t)
	if cost == 0 || lv < need {
		*d = b.describe(lv)
		if lv < need {
			d.RetryAfter = durationOf(subSat(need, lv))
		} else {
			d.Allowed = true
		}
		return s, false
	}
	lv -= need
	*d = b.describe(lv)
	d.Allowed = true
	return TokenState{At: now, Tokens: lv}, true
}

// describe fills Limit, Remaining and ResetAfter for a bucket holding lv
// units.
func (b TokenBucket) describe(lv int64) Decision {
	rem := int64(0)
	if lv > 0 {
		rem = min(b.div.quo(lv), b.g.cap)
	}
	return Decision{Limit: int(b.g.cap), Remaining: int(rem), ResetAfter: durationOf(subSat(b.full, lv))}
}

// Apply takes cost tokens admitted elsewhere at time at, without deciding:
// the bucket may go into debt.
func (b TokenBucket) Apply(s TokenState, at, cost int64) TokenState {
	if cost <= 0 {
		return s
	}
	return TokenState{At: at, Tokens: subSat(b.level(s, at), satMul(cost, b.g.t))}
}

// IdleAt returns the time the bucket is full again.
func (b TokenBucket) IdleAt(s TokenState) int64 { return b.tat(s) }

// tat is the GCRA theoretical arrival time equivalent to s.
func (b TokenBucket) tat(s TokenState) int64 { return addSat(s.At, subSat(b.full, s.Tokens)) }

// Rebase keeps the requests the key has used (the tokens missing from its
// bucket) under the new refill interval, rounding the used share up and
// capping it at the new capacity, exactly as GCRA's Rebase does. prev must
// be a TokenBucket.
func (b TokenBucket) Rebase(s TokenState, now int64, prev Algorithm[TokenState]) TokenState {
	p, ok := prev.(TokenBucket)
	if !ok {
		p = b
	}
	tat := b.g.Rebase(p.tat(s), now, p.g)
	if tat <= now {
		return TokenState{At: tat, Tokens: b.full} // full since tat
	}
	return TokenState{At: now, Tokens: b.full - (tat - now)}
}

// AppendState appends a tag byte, At and Tokens (big-endian): 17 bytes.
func (TokenBucket) AppendState(dst []byte, s TokenState) []byte {
	dst = append(dst, tagTokenBucket)
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.At))
	return binary.BigEndian.AppendUint64(dst, uint64(s.Tokens))
}

// DecodeState reads what AppendState wrote.
func (TokenBucket) DecodeState(b []byte) (TokenState, error) {
	if len(b) != 17 || b[0] != tagTokenBucket {
		return TokenState{}, stateError("token-bucket", b, "17 bytes tagged 'T'")
	}
	return TokenState{At: int64(binary.BigEndian.Uint64(b[1:])), Tokens: int64(binary.BigEndian.Uint64(b[9:]))}, nil
}

// addSat is satAdd under the name the window algorithms use with subSat.
func addSat(a, b int64) int64 { return satAdd(a, b) }

var _ Algorithm[TokenState] = TokenBucket{}

var _ StepperInto[TokenState] = TokenBucket{}
