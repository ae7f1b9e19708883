package algorithm

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"time"

	"github.com/fluxlimiter/flux/internal/errs"
)

// MaxRate is the highest rate accepted: one request per nanosecond.
const MaxRate = 1e9

// maxSpan bounds T + τ so that TAT arithmetic near any plausible clock
// reading stays far from int64 overflow (2^62 ns is about 146 years).
const maxSpan = 1 << 62

// GCRA is the generic cell rate algorithm as FluxLimiter and redis-cell
// define it. Its per-key state is one int64: the theoretical arrival time
// (TAT) of the next request, in Unix nanoseconds.
//
// With emission interval T and tolerance τ, a request of cost n at now is
// admitted iff max(TAT, now) + n·T − now ≤ τ + T; then TAT becomes
// max(TAT, now) + n·T. A denial leaves TAT unchanged.
type GCRA struct {
	t    int64   // emission interval T, ns
	tau  int64   // tolerance τ = Burst·T rounded down, ns
	cap  int64   // floor(Burst) + 1
	invT float64 // 1/T, to divide by T with a multiplication (see quo)
}

// NewGCRA compiles rate (requests per second, 0 < rate ≤ 1e9) and burst
// (extra requests, ≥ 0, may be fractional) into a GCRA. T is 1e9/rate
// rounded to the nearest nanosecond, τ is burst·T rounded down, and the
// capacity after idle is floor(burst) + 1.
func NewGCRA(rate, burst float64) (GCRA, error) {
	if math.IsNaN(rate) || math.IsInf(rate, 0) || rate <= 0 || rate > MaxRate {
		return GCRA{}, fmt.Errorf("%w: %v per second (want 0 < rate ≤ 1e9)", errs.InvalidRate, rate)
	}
	tf := math.Round(1e9 / rate)
	if tf >= maxSpan {
		return GCRA{}, fmt.Errorf("%w: %v per second is below one request per 146 years", errs.InvalidRate, rate)
	}
	t := int64(tf)
	if math.IsNaN(burst) || math.IsInf(burst, 0) || burst < 0 {
		return GCRA{}, fmt.Errorf("%w: %v (want a finite burst ≥ 0)", errs.InvalidBurst, burst)
	}
	whole := math.Floor(burst)
	if whole >= float64(maxSpan/t) {
		return GCRA{}, fmt.Errorf("%w: %v at rate %v spans more than 146 years", errs.InvalidBurst, burst, rate)
	}
	w := int64(whole)
	// τ = floor(burst·T), computed so the whole part is exact.
	tau := w*t + int64(math.Floor((burst-whole)*float64(t)))
	if tau+t > maxSpan || tau+t < 0 {
		return GCRA{}, fmt.Errorf("%w: %v at rate %v spans more than 146 years", errs.InvalidBurst, burst, rate)
	}
	return GCRA{t: t, tau: tau, cap: w + 1, invT: 1 / float64(t)}, nil
}

// Name returns "gcra".
func (GCRA) Name() string { return "gcra" }

// Interval returns the emission interval T in nanoseconds.
func (g GCRA) Interval() int64 { return g.t }

// Tolerance returns τ in nanoseconds.
func (g GCRA) Tolerance() int64 { return g.tau }

// Capacity returns floor(burst) + 1.
func (g GCRA) Capacity() int64 { return g.cap }

// Fresh returns the smallest TAT: a key that has never been seen.
func (GCRA) Fresh(int64) int64 { return math.MinInt64 }

// Step decides a request of the given cost at now.
func (g GCRA) Step(tat, now, cost int64) (int64, Decision, bool) {
	var d Decision
	next, changed := g.StepInto(tat, now, cost, &d)
	return next, d, changed
}

// StepInto is Step writing the decision into *d, which saves copying it
// on the shard's hot path (see StepperInto).
func (g GCRA) StepInto(tat, now, cost int64, d *Decision) (int64, bool) {
	base := max(tat, now)
	if cost == 0 {
		*d = g.peek(base, now)
		return tat, false
	}
	// The decision is written whole, with describeInto's arithmetic inline:
	// this is the shard's hot path. base ≥ now, so the spans used are ≥ 0;
	// they saturate rather than wrap when a clock far behind a TAT puts
	// them beyond int64. (Within τ+T of the end of int64 time, the year
	// 2262, TATs saturate and admissions there are no longer recorded.)
	span := g.tau + g.t
	next := satAdd(base, cost*g.t)
	used := subSat(next, now)
	if over := used - span; over > 0 {
		used = subSat(base, now)
		*d = Decision{Limit: int(g.cap), Remaining: int(g.remaining(span - used)),
			RetryAfter: durationOf(over), ResetAfter: durationOf(used)}
		return tat, false
	}
	*d = Decision{Allowed: true, Limit: int(g.cap), Remaining: int(g.remaining(span - used)),
		ResetAfter: durationOf(used)}
	return next, true
}

// remaining returns the whole cost-1 requests that fit in left ns of the
// span τ+T: floor(left/T) capped at the capacity, 0 if left ≤ 0.
func (g GCRA) remaining(left int64) int64 {
	if left <= 0 {
		return 0
	}
	return min(g.quo(left), g.cap)
}

// peek reports what a cost-1 request would get at now.
func (g GCRA) peek(base, now int64) Decision {
	d := g.describe(base, now)
	if over := subSat(base, now) - g.tau; over > 0 {
		d.RetryAfter = durationOf(over)
	} else {
		d.Allowed = true
	}
	return d
}

// describe fills Limit, Remaining and ResetAfter for a key whose TAT is tat
// (already ≥ now or equivalent to it).
func (g GCRA) describe(tat, now int64) Decision {
	var d Decision
	g.describeInto(tat, now, &d)
	return d
}

// describeInto sets every field of *d but Allowed and RetryAfter.
func (g GCRA) describeInto(tat, now int64, d *Decision) {
	used := max(subSat(tat, now), 0)
	d.Limit, d.Remaining, d.ResetAfter, d.Delay = int(g.cap), int(g.remaining(g.tau+g.t-used)), durationOf(used), 0
}

// quo returns floor(x/T) for 0 < x ≤ τ+T. A float multiplication is several
// times cheaper than an integer division; its estimate is off by at most
// one while the quotient stays below 2^50 (x/T ≤ capacity here), and one
// correction step makes it exact. Larger capacities divide.
func (g GCRA) quo(x int64) int64 {
	if g.cap >= 1<<50 {
		return x / g.t
	}
	q := int64(float64(x) * g.invT)
	if q*g.t > x {
		q--
	} else if (q+1)*g.t <= x {
		q++
	}
	return q
}

// Apply adds an admission of cost made elsewhere at time at.
func (g GCRA) Apply(tat, at, cost int64) int64 {
	if cost <= 0 {
		return tat
	}
	return satAdd(max(tat, at), satMul(cost, g.t))
}

// IdleAt returns tat: from then on the key equals a fresh one.
func (GCRA) IdleAt(tat int64) int64 { return tat }

// Rebase keeps the number of requests the key has used (its backlog
// TAT − now measured in emission intervals) under the new interval, capped
// at the new capacity. prev must be a GCRA.
func (g GCRA) Rebase(tat, now int64, prev Algorithm[int64]) int64 {
	if tat <= now {
		return tat
	}
	p, ok := prev.(GCRA)
	if !ok || p.t == g.t {
		return min(tat, satAdd(now, g.tau+g.t))
	}
	backlog := uint64(tat - now)
	hi, lo := bits.Mul64(backlog, uint64(g.t))
	full := uint64(g.tau + g.t)
	if hi >= uint64(p.t) {
		return satAdd(now, int64(full))
	}
	q, r := bits.Div64(hi, lo, uint64(p.t))
	if r != 0 {
		q++ // round the used share up: never hand back an allowance
	}
	return satAdd(now, int64(min(q, full)))
}

// AppendState appends the TAT as 8 big-endian bytes.
func (GCRA) AppendState(dst []byte, tat int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(tat))
}

// DecodeState reads what AppendState wrote.
func (GCRA) DecodeState(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: gcra state is 8 bytes, got %d", errs.InvalidState, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

func satMul(a, b int64) int64 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi != 0 || lo > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(lo)
}

// durationOf converts a non-negative nanosecond count; integer nanoseconds
// are exact, so no rounding is needed for RetryAfter to be "rounded up".
func durationOf(ns int64) time.Duration { return time.Duration(ns) }
