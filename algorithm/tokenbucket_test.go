package algorithm_test

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
)

func mustTokenBucket(t testing.TB, rate, burst float64) algorithm.TokenBucket {
	t.Helper()
	b, err := algorithm.NewTokenBucket(rate, burst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Textbook behaviour: 10 tokens per second, burst 5 → a bucket of 6.
func TestTokenBucketTable(t *testing.T) {
	b := mustTokenBucket(t, 10, 5)
	h := newHarness(t, b, nil, b.Interval())
	T := 100 * time.Millisecond
	now := t0
	s := b.Fresh(now)
	type want struct {
		advance   time.Duration
		cost      int64
		ok        bool
		remaining int
		retry     time.Duration
		reset     time.Duration
	}
	for i, w := range []want{
		{0, 0, true, 6, 0, 0},      // peek a full bucket
		{0, 1, true, 5, 0, T},      // take one token
		{0, 3, true, 2, 0, 4 * T},  // three more
		{0, 3, false, 2, T, 4 * T}, // two left: wait for the third
		{T - 1, 3, false, 2, 1, 3*T + 1},
		{1, 3, true, 0, 0, 6 * T},  // refilled exactly one token
		{0, 1, false, 0, T, 6 * T}, // empty
		{T / 2, 0, false, 0, T / 2, 5*T + T/2},
		{10 * T, 0, true, 6, 0, 0}, // full again, capped at the capacity
		{0, 6, true, 0, 0, 6 * T},  // the whole bucket at once
	} {
		now += int64(w.advance)
		var d algorithm.Decision
		s, d = h.step(s, now, w.cost)
		if d.Allowed != w.ok || d.Remaining != w.remaining || d.RetryAfter != w.retry || d.ResetAfter != w.reset || d.Limit != 6 {
			t.Fatalf("step %d (cost %d): got %s, want %+v", i, w.cost, describe(d), w)
		}
	}
	// The state says how many tokens the key holds, in units of 1/T.
	if s.Tokens != 0 || s.At != now {
		t.Fatalf("empty bucket state %+v", s)
	}
	s, _ = h.step(s, now+int64(2*T+T/2), 0)
	if got := b.Apply(s, now+int64(2*T+T/2), 1); got.Tokens != int64(T+T/2) {
		t.Fatalf("2.5 tokens minus one: %+v", got)
	}
}

// refBucket is a plain token bucket over exact rationals: tokens refill at
// 1/T per nanosecond up to full.
type refBucket struct {
	t      int64
	cap    int64
	full   *big.Rat
	tokens *big.Rat
	at     int64
}

func newRefBucket(b algorithm.TokenBucket) *refBucket {
	full := big.NewRat(b.Full(), b.Interval())
	return &refBucket{t: b.Interval(), cap: b.Capacity(), full: full, tokens: new(big.Rat).Set(full), at: math.MinInt64}
}

func (r *refBucket) level(now int64) *big.Rat {
	lv := new(big.Rat).Set(r.tokens)
	if r.at == math.MinInt64 { // full forever
		return lv.Set(r.full)
	}
	if now > r.at {
		lv.Add(lv, big.NewRat(now-r.at, r.t))
		if lv.Cmp(r.full) > 0 {
			lv.Set(r.full)
		}
	}
	return lv
}

func (r *refBucket) ns(x *big.Rat) time.Duration {
	v := new(big.Rat).Mul(x, big.NewRat(r.t, 1))
	if !v.IsInt() {
		panic("reference: not a whole number of nanoseconds")
	}
	return time.Duration(v.Num().Int64())
}

func (r *refBucket) describe(lv *big.Rat) algorithm.Decision {
	rem := int64(0)
	if lv.Sign() > 0 {
		rem = min(new(big.Int).Quo(lv.Num(), lv.Denom()).Int64(), r.cap)
	}
	return algorithm.Decision{Limit: int(r.cap), Remaining: int(rem), ResetAfter: r.ns(new(big.Rat).Sub(r.full, lv))}
}

func (r *refBucket) check(now, cost int64) algorithm.Decision {
	lv := r.level(now)
	need := big.NewRat(max(cost, 1), 1)
	if cost == 0 || lv.Cmp(need) < 0 {
		d := r.describe(lv)
		if lv.Cmp(need) < 0 {
			d.RetryAfter = r.ns(new(big.Rat).Sub(need, lv))
		} else {
			d.Allowed = true
		}
		return d
	}
	r.tokens, r.at = lv.Sub(lv, need), now
	d := r.describe(r.tokens)
	d.Allowed = true
	return d
}

// apply takes cost tokens at time at; a time before the last event takes
// them at that event (the bucket was not full there, so nothing is lost).
func (r *refBucket) apply(at, cost int64) {
	if cost == 0 {
		return
	}
	if at >= r.at {
		r.tokens, r.at = r.level(at), at
	}
	r.tokens.Sub(r.tokens, big.NewRat(cost, 1))
}

// runTokenBucket drives a token bucket, GCRA with the same parameters and
// the reference model with one program, and checks that all three agree on
// every decision (the token bucket also against the invariants). Rebase
// ops switch between the two parameter sets.
func runTokenBucket(t testing.TB, rate, burst float64, prog []byte) {
	params := [2][2]float64{{rate, burst}, {rate * 2.5, float64(int(burst) / 2)}}
	var tbs [2]algorithm.TokenBucket
	var gs [2]algorithm.GCRA
	for i, p := range params {
		var err error
		if tbs[i], err = algorithm.NewTokenBucket(p[0], p[1]); err != nil {
			t.Fatal(err)
		}
		if gs[i], err = algorithm.NewGCRA(p[0], p[1]); err != nil {
			t.Fatal(err)
		}
	}
	cur := 0
	now := t0
	h := newHarness(t, tbs[0], nil, tbs[0].Full())
	s := tbs[0].Fresh(now)
	tat := gs[0].Fresh(now)
	ref := newRefBucket(tbs[0])
	for i, o := range decodeOps(prog) {
		tb, g := tbs[cur], gs[cur]
		switch o.kind {
		case 0:
			now += advance(o, tb.Full())
		case 1:
			cost := int64(o.a) % (tb.Capacity() + 1)
			var d algorithm.Decision
			s, d = h.step(s, now, cost)
			var dg algorithm.Decision
			tat, dg, _ = g.Step(tat, now, cost)
			if d != dg {
				t.Fatalf("op %d: cost %d at %d: token bucket %s, GCRA %s", i, cost, now, describe(d), describe(dg))
			}
			if dr := ref.check(now, cost); d != dr {
				t.Fatalf("op %d: cost %d at %d: token bucket %s, reference %s", i, cost, now, describe(d), describe(dr))
			}
		case 2:
			at := now - int64(o.b%8)*tb.Interval()/3
			cost := int64(o.a) % (2*tb.Capacity() + 1)
			s = h.apply(s, at, now, cost)
			tat = g.Apply(tat, at, cost)
			ref.apply(at, cost)
		case 3:
			next := 1 - cur
			_, before, _ := tbs[cur].Step(s, now, 0)
			s = tbs[next].Rebase(s, now, tbs[cur])
			tat = gs[next].Rebase(tat, now, gs[cur])
			cur = next
			h = newHarness(t, tbs[cur], nil, tbs[cur].Full())
			_, after, _ := tbs[cur].Step(s, now, 0)
			// With whole bursts no key gains an allowance, and without debt
			// the key keeps exactly what it used. (A fractional burst adds a
			// fraction of a request that Remaining does not show.)
			used := before.Limit - before.Remaining
			want := max(after.Limit-used, 0)
			whole := params[0][1] == float64(int(params[0][1]))
			exact := int64(before.ResetAfter) <= tbs[1-cur].Full()
			if whole && (after.Remaining > want || exact && after.Remaining != want) {
				t.Fatalf("op %d: rebase: %s → %s, want Remaining %d", i, describe(before), describe(after), want)
			}
			// The reference restarts from the GCRA state it must agree with.
			ref = newRefBucket(tbs[cur])
			if tat > now {
				ref.tokens, ref.at = big.NewRat(tbs[cur].Full()-(tat-now), tbs[cur].Interval()), now
			} else {
				ref.at = tat // full since tat
			}
		}
		if ia, ig := tbs[cur].IdleAt(s), gs[cur].IdleAt(tat); (ia > now || ig > now) && ia != ig {
			t.Fatalf("op %d: token bucket idle at %d, GCRA at %d", i, ia, ig)
		}
	}
}

// The token bucket admits exactly what GCRA admits, with the same
// decisions, for the same rate and burst: random programs over a spread of
// parameters, fractional bursts and high rates included.
func TestTokenBucketEqualsGCRA(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, p := range [][2]float64{{10, 5}, {2, 0}, {1, 0}, {3, 2.5}, {1000, 99}, {7, 0.3}, {1e6, 1000}, {3e8, 7}, {1.0 / 86400, 10}} {
		for range 25 {
			runTokenBucket(t, p[0], p[1], randomOps(r, 150))
		}
	}
}

func FuzzTokenBucket(f *testing.F) {
	f.Add(uint32(1000), uint16(50), []byte("\x01\x01\x00\x01\x01\x00\x00\x01\x10"))
	f.Fuzz(func(t *testing.T, rate uint32, burst uint16, prog []byte) {
		runTokenBucket(t, float64(rate%1_000_000+1)/100, float64(burst%2000)/10, prog)
	})
}
