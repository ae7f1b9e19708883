package storetest

import (
	"math"
	"testing"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/store"
)

// fuzzLimits are the limits FuzzGCRA picks from: T from 1 ns to a day.
var fuzzLimits = [][2]float64{{1e9, 3}, {1e6, 0}, {1000, 99}, {7, 2.5}, {1, 0}, {1.0 / 86400, 30}}

// FuzzGCRA is the body of a backend's fuzz target for store.AtomicGCRA.
// From arbitrary stored TATs and times over the whole int64 range, every
// decision s makes and every TAT it stores must equal algorithm.GCRA's.
// set stores tat as the state of key "fuzz" of limiter "l", or deletes
// that state when fresh; stored reads the TAT back. Stored TATs are kept
// within 2^62 ns (146 years) of now, algorithm.GCRA's domain (beyond it
// its own int64 differences wrap). It adds its seeds to f.
func FuzzGCRA(f *testing.F, s store.AtomicGCRA, set func(t *testing.T, tat int64, fresh bool) error, stored func(t *testing.T) (int64, error)) {
	for _, seed := range []struct {
		tat, now int64
		cost     uint8
		limit    uint8
		fresh    bool
	}{
		{0, 0, 1, 0, true},
		{1_700_000_000_000_000_000, 1_700_000_000_000_000_000, 1, 2, false},
		{1_700_000_000_500_000_000, 1_700_000_000_000_000_000, 3, 3, false},
		{-1, 0, 1, 1, false},
		{-999_999_999, -1_000_000_000, 2, 4, false},
		{math.MaxInt64, math.MaxInt64 - 5, 1, 4, false},
		{math.MaxInt64 - 3, math.MaxInt64 - 5, 1, 0, true},
		{math.MinInt64 + 1, math.MinInt64 + 1, 1, 5, false},
		{5_000_000_000, -5_000_000_001, 4, 3, false},
		{math.MaxInt64, -math.MaxInt64, 1, 4, false}, // mapped near now
		{999_999_999, 1_000_000_000, 0, 2, false},
	} {
		f.Add(seed.tat, seed.now, seed.cost, seed.limit, seed.fresh)
	}
	f.Fuzz(func(t *testing.T, tat, now int64, cost, limit uint8, fresh bool) {
		tat = near(tat, now)
		l := fuzzLimits[int(limit)%len(fuzzLimits)]
		g, err := algorithm.NewGCRA(l[0], l[1])
		if err != nil {
			t.Fatal(err)
		}
		c := int64(cost) % (min(g.Capacity(), 8) + 1)
		if fresh {
			tat = g.Fresh(now)
		}
		if err := set(t, tat, fresh); err != nil {
			t.Fatal(err)
		}
		next, want, _ := g.Step(tat, now, c)
		got, err := s.CheckGCRA(t.Context(), "l", "fuzz", g, now, c)
		if err != nil {
			t.Fatalf("CheckGCRA(tat=%d, now=%d, cost=%d): %v", tat, now, c, err)
		}
		if got != want {
			t.Fatalf("CheckGCRA(tat=%d, now=%d, cost=%d, T=%d) = %+v, algorithm.GCRA says %+v", tat, now, c, g.Interval(), got, want)
		}
		if want.Allowed && c > 0 {
			if st, err := stored(t); err != nil || st != next {
				t.Fatalf("stored TAT %d, %v; algorithm.GCRA says %d", st, err, next)
			}
		}
	})
}

// near maps tat to a TAT at most 2^62 ns from now, saturated at the int64
// bounds; a tat already that close is kept.
func near(tat, now int64) int64 {
	const span = 1 << 62
	if d := tat - now; (tat >= now) == (d >= 0) && d >= -span && d <= span {
		return tat
	}
	off := tat % span
	switch {
	case off > 0 && now > math.MaxInt64-off:
		return math.MaxInt64
	case off < 0 && now < math.MinInt64-off:
		return math.MinInt64
	}
	return now + off
}
