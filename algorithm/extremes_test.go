package algorithm_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
)

// extremeClocks are clock readings a state can be built at and then
// stepped at: both ends of int64, a clock thrown back across zero, and an
// hour either side of a plausible one.
var extremeClocks = []int64{
	math.MinInt64 + 1, math.MinInt64 / 2, -1, 0,
	1_700_000_000e9 - int64(time.Hour), 1_700_000_000e9, 1_700_000_000e9 + int64(time.Hour),
	math.MaxInt64 / 2, math.MaxInt64 - int64(time.Hour), math.MaxInt64 - 1,
}

// checkExtremeClocks fills a key at t1 and steps it at t2 for every pair
// of extremeClocks: no step may panic or report a field out of range
// (a negative duration, Remaining outside [0, Limit], RetryAfter > 0
// other than for a denial), a key used up at t1 admits nothing at t2 ≤ t1
// (except near the end of int64 time, where states saturate)
// (a clock that goes back forgives nothing), and a denial or a peek
// changes nothing. Before the spans saturated, a clock far behind a state
// wrapped into a negative RetryAfter (fixed windows), a negative Delay
// (leaky bucket) and, for GCRA, an admission.
func checkExtremeClocks[S any](t *testing.T, alg algorithm.Algorithm[S]) {
	for _, t1 := range extremeClocks {
		for _, t2 := range extremeClocks {
			for _, cost := range []int64{0, 1, alg.Capacity()} {
				name := fmt.Sprintf("filled at %d, cost %d at %d", t1, cost, t2)
				func() {
					defer func() {
						if r := recover(); r != nil {
							t.Fatalf("%s: panic: %v", name, r)
						}
					}()
					s, filled, _ := alg.Step(alg.Fresh(t1), t1, alg.Capacity())
					before := alg.AppendState(nil, s)
					next, d, changed := alg.Step(s, t2, cost)
					if d.Limit != int(alg.Capacity()) || d.Remaining < 0 || d.Remaining > d.Limit ||
						d.ResetAfter < 0 || d.RetryAfter < 0 || d.Delay < 0 || d.Allowed != (d.RetryAfter == 0) {
						t.Fatalf("%s: %+v", name, d)
					}
					if filled.Allowed && t1 <= math.MaxInt64/2 && cost > 0 && t2 <= t1 && d.Allowed {
						t.Fatalf("%s: a key used up at %d admitted at %d, no later (%+v)", name, t1, t2, d)
					}
					if (!d.Allowed || cost == 0) && (changed || string(alg.AppendState(nil, next)) != string(before)) {
						t.Fatalf("%s: a denial or a peek changed the state (%+v)", name, d)
					}
					_ = alg.Apply(s, t2, cost)
					_ = alg.IdleAt(s)
				}()
			}
		}
	}
}

func TestExtremeClocks(t *testing.T) {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	g, err := algorithm.NewGCRA(10, 5)
	must(err)
	tb, err := algorithm.NewTokenBucket(10, 5)
	must(err)
	lb, err := algorithm.NewLeakyBucket(10, 5)
	must(err)
	sl, err := algorithm.NewSlidingLog(5, time.Second)
	must(err)
	sw, err := algorithm.NewSlidingWindow(5, time.Second)
	must(err)
	fw, err := algorithm.NewFixedWindow(5, time.Second)
	must(err)
	cw, err := algorithm.NewCalendarWindow(5, algorithm.Day, time.UTC)
	must(err)
	t.Run("gcra", func(t *testing.T) { checkExtremeClocks(t, algorithm.Algorithm[int64](g)) })
	t.Run("token-bucket", func(t *testing.T) { checkExtremeClocks(t, algorithm.Algorithm[algorithm.TokenState](tb)) })
	t.Run("leaky-bucket", func(t *testing.T) { checkExtremeClocks(t, algorithm.Algorithm[int64](lb)) })
	t.Run("sliding-window-log", func(t *testing.T) { checkExtremeClocks(t, algorithm.Algorithm[[]int64](sl)) })
	t.Run("sliding-window", func(t *testing.T) { checkExtremeClocks(t, algorithm.Algorithm[algorithm.SlidingState](sw)) })
	t.Run("fixed-window", func(t *testing.T) { checkExtremeClocks(t, algorithm.Algorithm[algorithm.FixedState](fw)) })
	t.Run("calendar-day", func(t *testing.T) { checkExtremeClocks(t, algorithm.Algorithm[algorithm.FixedState](cw)) })
}
