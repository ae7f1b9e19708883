package redisstore_test

import (
	"math"
	"strconv"
	"testing"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/store/redisstore"
)

// fuzzLimits are the limits the fuzzer picks from: T from 1 ns to a day.
var fuzzLimits = [][2]float64{{1e9, 3}, {1e6, 0}, {1000, 99}, {7, 2.5}, {1, 0}, {1.0 / 86400, 30}}

// FuzzCheckGCRA drives the Lua script from arbitrary stored TATs and times
// over the whole int64 range and compares every decision and stored TAT
// with algorithm.GCRA. The stored TAT is at most 2^62 ns (146 years) from
// now, algorithm.GCRA's domain (beyond it its own int64 differences wrap).
func FuzzCheckGCRA(f *testing.F) {
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
		{math.MinInt64 + 1, math.MinInt64 + 1, 1, 5, false},
		{5_000_000_000, -5_000_000_001, 4, 3, false},
		{math.MaxInt64, -math.MaxInt64, 1, 4, false}, // mapped near now
		{999_999_999, 1_000_000_000, 0, 2, false},
	} {
		f.Add(seed.tat, seed.now, seed.cost, seed.limit, seed.fresh)
	}
	rdb := newClient(f)
	p := prefix(f, rdb)
	s := redisstore.New(rdb, redisstore.Options{Prefix: p})
	full := p + "g:l:fuzz" // the record of key "fuzz" of limiter "l"
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
			err = rdb.Del(t.Context(), full).Err()
		} else {
			err = rdb.Set(t.Context(), full, strconv.FormatInt(tat, 10), 0).Err()
		}
		if err != nil {
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
			v, err := rdb.Get(t.Context(), full).Result()
			if err != nil || v != strconv.FormatInt(next, 10) {
				t.Fatalf("stored TAT %q, %v; algorithm.GCRA says %d", v, err, next)
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
