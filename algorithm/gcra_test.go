package algorithm

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/internal/errs"
)

func mustGCRA(t testing.TB, rate, burst float64) GCRA {
	t.Helper()
	g, err := NewGCRA(rate, burst)
	if err != nil {
		t.Fatalf("NewGCRA(%v, %v): %v", rate, burst, err)
	}
	return g
}

func TestNewGCRAParameters(t *testing.T) {
	for _, tc := range []struct {
		rate, burst   float64
		t, tau, capac int64
	}{
		{10, 5, 100e6, 500e6, 6},
		{2, 0, 500e6, 0, 1},
		{1, 1.5, 1e9, 1.5e9, 2},
		{3, 0, 333333333, 0, 1},             // 1e9/3 rounds to nearest
		{1.5e9 / 2, 0, 1, 0, 1},             // 7.5e8/s: T = 1.33 → 1
		{1e9, 10, 1, 10, 11},                // top rate
		{1.0 / 86400, 0, 86400e9, 0, 1},     // one per day
		{1e6, 0.25, 1000, 250, 1},           // fractional tolerance, capacity 1
		{6e8, 0, 2, 0, 1},                   // 1.67 ns rounds to 2
		{1e3, 1e6, 1e6, 1e6 * 1e6, 1e6 + 1}, // large burst stays exact
	} {
		g := mustGCRA(t, tc.rate, tc.burst)
		if g.Interval() != tc.t || g.Tolerance() != tc.tau || g.Capacity() != tc.capac {
			t.Errorf("NewGCRA(%v, %v) = T %d τ %d cap %d; want %d %d %d", tc.rate, tc.burst,
				g.Interval(), g.Tolerance(), g.Capacity(), tc.t, tc.tau, tc.capac)
		}
	}
}

func TestNewGCRAInvalid(t *testing.T) {
	for _, tc := range []struct {
		rate, burst float64
		want        error
	}{
		{0, 1, errs.InvalidRate},
		{-1, 1, errs.InvalidRate},
		{1e9 + 1, 1, errs.InvalidRate},
		{math.NaN(), 1, errs.InvalidRate},
		{math.Inf(1), 1, errs.InvalidRate},
		{1e-12, 0, errs.InvalidRate}, // T beyond 146 years
		{1, -1, errs.InvalidBurst},
		{1, math.NaN(), errs.InvalidBurst},
		{1, math.Inf(1), errs.InvalidBurst},
		{1, 1e12, errs.InvalidBurst}, // τ beyond 146 years
	} {
		if _, err := NewGCRA(tc.rate, tc.burst); !errors.Is(err, tc.want) {
			t.Errorf("NewGCRA(%v, %v) error = %v; want %v", tc.rate, tc.burst, err, tc.want)
		}
	}
}

// FluxLimiter's documented behaviour: rate 10/s, burst 5 admits 6 at once,
// then exactly one per 100 ms.
func TestGCRABurstThenSteady(t *testing.T) {
	g := mustGCRA(t, 10, 5)
	now := int64(1_700_000_000e9)
	tat := g.Fresh(now)
	for i := range 6 {
		var d Decision
		tat, d, _ = g.Step(tat, now, 1)
		if !d.Allowed || d.Limit != 6 || d.Remaining != 5-i {
			t.Fatalf("request %d: %+v; want allowed, limit 6, remaining %d", i, d, 5-i)
		}
	}
	_, d, changed := g.Step(tat, now, 1)
	if d.Allowed || changed || d.Remaining != 0 || d.RetryAfter != 100*time.Millisecond || d.ResetAfter != 600*time.Millisecond {
		t.Fatalf("7th request: %+v changed=%v; want denied, remaining 0, retry 100ms, reset 600ms", d, changed)
	}
	for step := range 20 {
		now += int64(100 * time.Millisecond)
		tat, d, _ = g.Step(tat, now, 1)
		if !d.Allowed {
			t.Fatalf("step %d: denied %+v", step, d)
		}
		if _, d2, _ := g.Step(tat, now, 1); d2.Allowed {
			t.Fatalf("step %d: a second request in the same 100 ms was admitted", step)
		}
	}
}

func TestGCRARate2Burst0(t *testing.T) {
	g := mustGCRA(t, 2, 0)
	now := int64(5e9)
	tat, d, _ := g.Step(g.Fresh(now), now, 1)
	if !d.Allowed || d.Remaining != 0 || d.Limit != 1 {
		t.Fatalf("first: %+v", d)
	}
	_, d, _ = g.Step(tat, now, 1)
	if d.Allowed || d.RetryAfter != 500*time.Millisecond || d.Remaining != 0 {
		t.Fatalf("second: %+v; want denied with RetryAfter 500ms", d)
	}
}

// A caller that waits exactly RetryAfter is admitted; 1 ns less is not.
func TestGCRARetryAfterExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		rate := math.Exp(rng.Float64()*30 - 10) // ~4.5e-5 .. 4.8e8 per second
		burst := math.Floor(rng.Float64() * 20)
		if rng.IntN(3) == 0 {
			burst += rng.Float64()
		}
		g, err := NewGCRA(rate, burst)
		if err != nil {
			continue
		}
		now := int64(1_700_000_000e9)
		tat := g.Fresh(now)
		cost := 1 + rng.Int64N(g.Capacity())
		var d Decision
		for {
			var next int64
			next, d, _ = g.Step(tat, now, cost)
			if !d.Allowed {
				break
			}
			tat = next
		}
		if d.RetryAfter <= 0 {
			t.Fatalf("rate %v burst %v: denial with RetryAfter %v", rate, burst, d.RetryAfter)
		}
		if _, early, _ := g.Step(tat, now+int64(d.RetryAfter)-1, cost); early.Allowed {
			t.Fatalf("rate %v burst %v cost %d: admitted 1 ns before RetryAfter %v", rate, burst, cost, d.RetryAfter)
		}
		if _, onTime, _ := g.Step(tat, now+int64(d.RetryAfter), cost); !onTime.Allowed {
			t.Fatalf("rate %v burst %v cost %d: denied after waiting RetryAfter %v: %+v", rate, burst, cost, d.RetryAfter, onTime)
		}
	}
}

// CheckN(n) equals n single checks while all are admitted.
func TestGCRACostNEqualsNSingles(t *testing.T) {
	g := mustGCRA(t, 100, 9)
	now := int64(1e18)
	for n := int64(1); n <= g.Capacity(); n++ {
		a, da, _ := g.Step(g.Fresh(now), now, n)
		b := g.Fresh(now)
		var db Decision
		for range n {
			b, db, _ = g.Step(b, now, 1)
		}
		if a != b || da != db {
			t.Fatalf("cost %d: state %d decision %+v; %d singles: %d %+v", n, a, da, n, b, db)
		}
	}
}

func TestGCRAPeekChangesNothing(t *testing.T) {
	g := mustGCRA(t, 10, 2)
	now := int64(1e18)
	tat := g.Fresh(now)
	for i := range 4 {
		next, peek, changed := g.Step(tat, now, 0)
		if changed || next != tat {
			t.Fatalf("peek %d changed the state", i)
		}
		_, real, _ := g.Step(tat, now, 1)
		if peek.Allowed != real.Allowed || peek.RetryAfter != real.RetryAfter || peek.Limit != real.Limit {
			t.Fatalf("peek %d = %+v; a real check gets %+v", i, peek, real)
		}
		if peek.Allowed && peek.Remaining != real.Remaining+1 {
			t.Fatalf("peek %d remaining %d; after the real check %d", i, peek.Remaining, real.Remaining)
		}
		tat, _, _ = g.Step(tat, now, 1)
	}
}

// Exact integer behaviour at the top rate and at one per day.
func TestGCRAExtremeRates(t *testing.T) {
	t.Run("1e9/s", func(t *testing.T) {
		g := mustGCRA(t, 1e9, 0)
		now := int64(1e18)
		tat := g.Fresh(now)
		for i := range 1000 {
			var d Decision
			tat, d, _ = g.Step(tat, now, 1)
			if !d.Allowed {
				t.Fatalf("ns %d: denied", i)
			}
			if _, d2, _ := g.Step(tat, now, 1); d2.Allowed || d2.RetryAfter != 1 {
				t.Fatalf("ns %d: second request %+v; want denied, RetryAfter 1ns", i, d2)
			}
			now++
		}
	})
	t.Run("1e6/s", func(t *testing.T) {
		g := mustGCRA(t, 1e6, 999)
		now := int64(1e18)
		tat := g.Fresh(now)
		admitted := 0
		for range 3000 { // 3000 requests inside one microsecond: capacity 1000
			var d Decision
			tat, d, _ = g.Step(tat, now, 1)
			if d.Allowed {
				admitted++
			}
		}
		if admitted != 1000 {
			t.Fatalf("admitted %d at once; want 1000", admitted)
		}
		now += int64(time.Second) // one second: exactly 1e6 more
		admitted = 0
		for range 1_000_000 {
			var d Decision
			tat, d, _ = g.Step(tat, now-int64(time.Second)+int64(admitted+1)*1000, 1)
			if d.Allowed {
				admitted++
			}
		}
		if admitted != 1_000_000 {
			t.Fatalf("admitted %d in one second at 1e6/s", admitted)
		}
	})
	t.Run("1/day", func(t *testing.T) {
		g := mustGCRA(t, 1.0/86400, 0)
		now := int64(1_700_000_000e9)
		tat, d, _ := g.Step(g.Fresh(now), now, 1)
		if !d.Allowed {
			t.Fatal("first request of the day denied")
		}
		_, d, _ = g.Step(tat, now+int64(23*time.Hour), 1)
		if d.Allowed || d.RetryAfter != time.Hour {
			t.Fatalf("after 23h: %+v; want denied with RetryAfter 1h", d)
		}
		if _, d, _ = g.Step(tat, now+int64(24*time.Hour), 1); !d.Allowed {
			t.Fatalf("after 24h: %+v", d)
		}
	})
	t.Run("no overflow near the int64 bounds", func(t *testing.T) {
		g := mustGCRA(t, 1.0/(86400*365*100), 0.2) // one per century
		for _, now := range []int64{math.MaxInt64 - 1, math.MaxInt64 / 2, math.MinInt64 + 1, 0} {
			tat, d, _ := g.Step(g.Fresh(now), now, 1)
			if d.Allowed && tat < now {
				t.Fatalf("now %d: TAT %d went backwards (overflow)", now, tat)
			}
			if d.ResetAfter < 0 || d.RetryAfter < 0 || d.Remaining < 0 {
				t.Fatalf("now %d: negative field in %+v", now, d)
			}
			_, d, _ = g.Step(tat, now, 1)
			if d.Allowed && now < math.MaxInt64/2 {
				t.Fatalf("now %d: second request admitted", now)
			}
		}
	})
}

// TestGCRASaturatedSpans: a clock thrown far behind a key's TAT (TAT − now
// beyond int64) must not wrap into an admission or a negative duration.
func TestGCRASaturatedSpans(t *testing.T) {
	g := mustGCRA(t, 1.0/86400, 16) // T one day, capacity 17
	day := int64(24 * time.Hour)
	tat, d, _ := g.Step(g.Fresh(0), math.MaxInt64-30*day, 1)
	if !d.Allowed {
		t.Fatalf("first request a month before the end of int64 time denied: %+v", d)
	}
	for _, now := range []int64{math.MinInt64 + 1, math.MinInt64 / 2, -1} {
		for _, cost := range []int64{0, 1, g.Capacity()} {
			next, d, changed := g.Step(tat, now, cost)
			if d.Allowed || changed || next != tat {
				t.Fatalf("now %d cost %d: TAT %d is far ahead, yet %+v (changed %v)", now, cost, tat, d, changed)
			}
			if d.RetryAfter <= 0 || d.ResetAfter <= 0 || d.Remaining != 0 || d.Limit != int(g.Capacity()) {
				t.Fatalf("now %d cost %d: %+v; want a saturated denial", now, cost, d)
			}
		}
	}
	if got := g.Rebase(math.MaxInt64, math.MaxInt64-1, mustGCRA(t, 2.0/86400, 16)); got < math.MaxInt64-1 {
		t.Fatalf("Rebase near the top of the clock wrapped to %d", got)
	}
}

func TestGCRAApplyIsAdditive(t *testing.T) {
	g := mustGCRA(t, 10, 4) // T 100ms, capacity 5
	now := int64(1e18)
	// Two nodes admit 2 each at the same instant; each applies the other's.
	a, _, _ := g.Step(g.Fresh(now), now, 2)
	b, _, _ := g.Step(g.Fresh(now), now, 2)
	a = g.Apply(a, now, 2)
	b = g.Apply(b, now, 2)
	if a != b || a != now+4*int64(100*time.Millisecond) {
		t.Fatalf("after exchange: a %d b %d; want both now+400ms", a-now, b-now)
	}
	_, d, _ := g.Step(a, now, 1)
	if !d.Allowed || d.Remaining != 0 {
		t.Fatalf("fifth request: %+v; want the last one admitted", d)
	}
	// An old admission applied to a fresh key counts from its own time.
	old := g.Apply(g.Fresh(now), now-int64(50*time.Millisecond), 1)
	if old != now+int64(50*time.Millisecond) {
		t.Fatalf("Apply of an admission 50ms old gave TAT now%+d", old-now)
	}
}

func TestGCRARebase(t *testing.T) {
	old := mustGCRA(t, 10, 9) // T 100ms, capacity 10
	now := int64(1e18)
	tat := old.Fresh(now)
	for range 4 {
		tat, _, _ = old.Step(tat, now, 1)
	}
	// Same requests used (4) under rate 100/s burst 9 (T 10ms): 6 remain.
	nw := mustGCRA(t, 100, 9)
	rb := nw.Rebase(tat, now, old)
	_, d, _ := nw.Step(rb, now, 0)
	if d.Remaining != 6 {
		t.Fatalf("after rebase to a faster rate: remaining %d; want 6", d.Remaining)
	}
	// Shrinking the burst caps the backlog at the new capacity: throttled, not forgiven.
	small := mustGCRA(t, 10, 1)
	rb = small.Rebase(tat, now, old)
	if _, d, _ = small.Step(rb, now, 1); d.Allowed {
		t.Fatalf("after shrinking capacity to 2 with 4 used: admitted %+v", d)
	}
	// An idle key stays idle.
	if got := nw.Rebase(now-5, now, old); got != now-5 {
		t.Fatalf("idle key rebased to %d", got)
	}
}

func TestGCRAStateEncoding(t *testing.T) {
	g := mustGCRA(t, 1, 1)
	for _, v := range []int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1_700_000_000e9} {
		got, err := g.DecodeState(g.AppendState(nil, v))
		if err != nil || got != v {
			t.Fatalf("round trip of %d: %d, %v", v, got, err)
		}
	}
	for _, b := range [][]byte{nil, {1, 2, 3}, make([]byte, 9)} {
		if _, err := g.DecodeState(b); !errors.Is(err, errs.InvalidState) {
			t.Fatalf("DecodeState(%v) = %v; want ErrInvalidState", b, err)
		}
	}
}
