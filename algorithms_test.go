package flux_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the zones the tests use, on machines without a zoneinfo database

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
)

var algT0 = time.Unix(1_700_000_001, 0) // a multiple of 3 s: windows start here

func algLimiter(t *testing.T, lim flux.Limit, opts ...flux.Option) (*flux.Limiter, *clock.Manual) {
	t.Helper()
	clk := clock.NewManual(algT0)
	l, err := flux.New(lim, append([]flux.Option{flux.WithClock(clk), flux.WithShards(3)}, opts...)...)
	if err != nil {
		t.Fatalf("New(%+v): %v", lim, err)
	}
	t.Cleanup(func() { l.Close() })
	return l, clk
}

func algLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestAlgorithmsValidation(t *testing.T) {
	paris := algLoc(t, "Europe/Paris")
	for _, c := range []struct {
		lim      flux.Limit
		err      error
		capacity int
	}{
		{flux.Limit{Rate: 10, Burst: 5}, nil, 6},
		{flux.Limit{Algorithm: flux.GCRA, Rate: 10, Burst: 5}, nil, 6},
		{flux.Limit{Algorithm: flux.TokenBucket, Rate: 10, Burst: 5.5}, nil, 6},
		{flux.Limit{Algorithm: flux.LeakyBucket, Rate: 10, Burst: 5.5}, nil, 6},
		{flux.Limit{Algorithm: flux.SlidingWindowLog, Limit: 5, Window: time.Minute}, nil, 5},
		{flux.Limit{Algorithm: flux.SlidingWindow, Limit: 100, Window: time.Minute}, nil, 100},
		{flux.Limit{Algorithm: flux.FixedWindow, Limit: 1000, Window: time.Hour}, nil, 1000},
		{flux.Limit{Algorithm: flux.FixedWindow, Limit: 1000, Calendar: flux.CalendarDay, Location: paris}, nil, 1000},
		{flux.Limit{Algorithm: flux.FixedWindow, Limit: 1000, Calendar: flux.CalendarMonth}, nil, 1000},
		{flux.Limit{Algorithm: "leaky"}, flux.ErrInvalidAlgorithm, 0},
		{flux.Limit{Algorithm: "GCRA", Rate: 1}, flux.ErrInvalidAlgorithm, 0},
		{flux.Limit{Algorithm: flux.TokenBucket, Rate: 0}, flux.ErrInvalidRate, 0},
		{flux.Limit{Algorithm: flux.LeakyBucket, Rate: 1, Burst: -1}, flux.ErrInvalidBurst, 0},
		{flux.Limit{Rate: 10, Limit: 5}, flux.ErrInvalidLimit, 0},
		{flux.Limit{Algorithm: flux.TokenBucket, Rate: 10, Window: time.Second}, flux.ErrInvalidWindow, 0},
		{flux.Limit{Algorithm: flux.SlidingWindow, Limit: 5, Window: time.Second, Rate: 5}, flux.ErrInvalidRate, 0},
		{flux.Limit{Algorithm: flux.SlidingWindow, Limit: 5, Window: time.Second, Burst: 5}, flux.ErrInvalidBurst, 0},
		{flux.Limit{Algorithm: flux.SlidingWindow, Limit: 0, Window: time.Second}, flux.ErrInvalidLimit, 0},
		{flux.Limit{Algorithm: flux.SlidingWindow, Limit: 1 << 31, Window: time.Second}, flux.ErrInvalidLimit, 0},
		{flux.Limit{Algorithm: flux.SlidingWindowLog, Limit: 1<<16 + 1, Window: time.Second}, flux.ErrInvalidLimit, 0},
		{flux.Limit{Algorithm: flux.SlidingWindowLog, Limit: 5}, flux.ErrInvalidWindow, 0},
		{flux.Limit{Algorithm: flux.FixedWindow, Limit: 5, Window: -time.Second}, flux.ErrInvalidWindow, 0},
		{flux.Limit{Algorithm: flux.FixedWindow, Limit: 5, Window: time.Duration(1<<62 + 1)}, flux.ErrInvalidWindow, 0},
		{flux.Limit{Algorithm: flux.FixedWindow, Limit: 5, Calendar: "fortnight"}, flux.ErrInvalidWindow, 0},
		{flux.Limit{Algorithm: flux.FixedWindow, Limit: 5, Calendar: flux.CalendarDay, Window: time.Hour}, flux.ErrInvalidWindow, 0},
		{flux.Limit{Algorithm: flux.FixedWindow, Limit: 5, Window: time.Hour, Location: paris}, flux.ErrInvalidWindow, 0},
		{flux.Limit{Algorithm: flux.SlidingWindow, Limit: 5, Calendar: flux.CalendarDay}, flux.ErrInvalidWindow, 0},
	} {
		err := c.lim.Validate()
		if c.err == nil && err != nil || c.err != nil && !errors.Is(err, c.err) {
			t.Errorf("%+v: Validate() = %v, want %v", c.lim, err, c.err)
		}
		if got := c.lim.Capacity(); got != c.capacity {
			t.Errorf("%+v: Capacity() = %d, want %d", c.lim, got, c.capacity)
		}
		l, err := flux.New(c.lim)
		if c.err == nil && err != nil || c.err != nil && !errors.Is(err, c.err) {
			t.Errorf("%+v: New: %v, want %v", c.lim, err, c.err)
		}
		if l != nil {
			l.Close()
		}
	}
	for _, a := range flux.Algorithms() {
		if a.Windowed() != strings.Contains(string(a), "window") {
			t.Errorf("%s.Windowed() = %v", a, a.Windowed())
		}
	}
}

// algRef is an algorithm run directly over a map, as a shard runs it.
type algRef interface {
	step(key string, now, cost int64) flux.Decision
	apply(key string, at, now, cost int64)
	setLimit(lim flux.Limit, now int64) error
	busy(now int64) int // keys not idle
}

type algModelOf[S any] struct {
	compile func(flux.Limit) (algorithm.Algorithm[S], error)
	alg     algorithm.Algorithm[S]
	m       map[string]S
}

func newAlgModel[S any](lim flux.Limit, compile func(flux.Limit) (algorithm.Algorithm[S], error)) algRef {
	alg, err := compile(lim)
	if err != nil {
		panic(err)
	}
	return &algModelOf[S]{compile: compile, alg: alg, m: map[string]S{}}
}

func (m *algModelOf[S]) step(key string, now, cost int64) flux.Decision {
	st, ok := m.m[key]
	if !ok {
		st = m.alg.Fresh(now)
	}
	next, d, changed := m.alg.Step(st, now, cost)
	if changed {
		m.m[key] = next
	}
	return d
}

func (m *algModelOf[S]) apply(key string, at, now, cost int64) {
	st, ok := m.m[key]
	if !ok {
		st = m.alg.Fresh(now)
	}
	next := m.alg.Apply(st, at, cost)
	if !ok && m.alg.IdleAt(next) <= now {
		return
	}
	m.m[key] = next
}

func (m *algModelOf[S]) setLimit(lim flux.Limit, now int64) error {
	alg, err := m.compile(lim)
	if err != nil {
		return err
	}
	for k, v := range m.m {
		if m.alg.IdleAt(v) <= now {
			delete(m.m, k)
			continue
		}
		m.m[k] = alg.Rebase(v, now, m.alg)
	}
	m.alg = alg
	return nil
}

func (m *algModelOf[S]) busy(now int64) int {
	n := 0
	for _, v := range m.m {
		if m.alg.IdleAt(v) > now {
			n++
		}
	}
	return n
}

// algCase is one algorithm with two limits to switch between.
type algCase struct {
	name       string
	lim, lim2  flux.Limit
	model      func(flux.Limit) algRef
	unit       time.Duration // a time scale for the random steps
	otherAlgos flux.Limit    // a limit of another algorithm
}

func algCases(t *testing.T) []algCase {
	paris := algLoc(t, "Europe/Paris")
	gcra := func(l flux.Limit) algRef {
		return newAlgModel(l, func(l flux.Limit) (algorithm.Algorithm[int64], error) { return algorithm.NewGCRA(l.Rate, l.Burst) })
	}
	token := func(l flux.Limit) algRef {
		return newAlgModel(l, func(l flux.Limit) (algorithm.Algorithm[algorithm.TokenState], error) {
			return algorithm.NewTokenBucket(l.Rate, l.Burst)
		})
	}
	leaky := func(l flux.Limit) algRef {
		return newAlgModel(l, func(l flux.Limit) (algorithm.Algorithm[int64], error) {
			return algorithm.NewLeakyBucket(l.Rate, l.Burst)
		})
	}
	slog := func(l flux.Limit) algRef {
		return newAlgModel(l, func(l flux.Limit) (algorithm.Algorithm[[]int64], error) {
			return algorithm.NewSlidingLog(int64(l.Limit), l.Window)
		})
	}
	sw := func(l flux.Limit) algRef {
		return newAlgModel(l, func(l flux.Limit) (algorithm.Algorithm[algorithm.SlidingState], error) {
			return algorithm.NewSlidingWindow(int64(l.Limit), l.Window)
		})
	}
	fixed := func(l flux.Limit) algRef {
		return newAlgModel(l, func(l flux.Limit) (algorithm.Algorithm[algorithm.FixedState], error) {
			units := map[flux.Calendar]algorithm.Calendar{flux.CalendarMinute: algorithm.Minute, flux.CalendarHour: algorithm.Hour, flux.CalendarDay: algorithm.Day}
			if l.Calendar != "" {
				return algorithm.NewCalendarWindow(int64(l.Limit), units[l.Calendar], l.Location)
			}
			return algorithm.NewFixedWindow(int64(l.Limit), l.Window)
		})
	}
	other := flux.Limit{Algorithm: flux.SlidingWindow, Limit: 3, Window: time.Second}
	return []algCase{
		{"gcra", flux.Limit{Rate: 4, Burst: 3}, flux.Limit{Rate: 1.5, Burst: 6}, gcra, time.Second, other},
		{"token-bucket", flux.Limit{Algorithm: flux.TokenBucket, Rate: 4, Burst: 3}, flux.Limit{Algorithm: flux.TokenBucket, Rate: 1.5, Burst: 6}, token, time.Second, other},
		{"leaky-bucket", flux.Limit{Algorithm: flux.LeakyBucket, Rate: 4, Burst: 3}, flux.Limit{Algorithm: flux.LeakyBucket, Rate: 10, Burst: 1}, leaky, time.Second, other},
		{"sliding-window-log", flux.Limit{Algorithm: flux.SlidingWindowLog, Limit: 4, Window: time.Second}, flux.Limit{Algorithm: flux.SlidingWindowLog, Limit: 7, Window: 3 * time.Second}, slog, time.Second, other},
		{"sliding-window", flux.Limit{Algorithm: flux.SlidingWindow, Limit: 4, Window: time.Second}, flux.Limit{Algorithm: flux.SlidingWindow, Limit: 2, Window: time.Second / 2}, sw, time.Second, flux.Limit{Rate: 1}},
		{"fixed-window", flux.Limit{Algorithm: flux.FixedWindow, Limit: 4, Window: time.Second}, flux.Limit{Algorithm: flux.FixedWindow, Limit: 6, Calendar: flux.CalendarMinute, Location: paris}, fixed, time.Second, other},
		{"fixed-window-calendar", flux.Limit{Algorithm: flux.FixedWindow, Limit: 5, Calendar: flux.CalendarMinute, Location: paris}, flux.Limit{Algorithm: flux.FixedWindow, Limit: 9, Calendar: flux.CalendarHour}, fixed, 20 * time.Second, other},
	}
}

// Every algorithm through flux.New: checks, peeks, batches, remote
// admissions, limit changes, snapshots and cleanup give exactly what the
// algorithm gives when run directly.
func TestAlgorithmsThroughLimiter(t *testing.T) {
	for _, c := range algCases(t) {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			l, clk := algLimiter(t, c.lim, flux.WithSweep(-1, 1))
			m := c.model(c.lim)
			r := rand.New(rand.NewPCG(21, uint64(len(c.name))))
			keys := []string{"alice", "bob", "carol", "dave", "erin"}
			lim := c.lim
			now := func() int64 { n, _ := clk.Now(); return n }
			admitted, delayed := 0, 0
			for i := range 1500 {
				switch k := r.IntN(20); {
				case k < 5:
					clk.Advance(time.Duration(r.Int64N(int64(c.unit) / 2)))
				case k < 11:
					key, cost := keys[r.IntN(len(keys))], r.IntN(lim.Capacity()+1)
					d, err := l.CheckN(ctx, key, cost)
					if err != nil {
						t.Fatal(err)
					}
					if want := m.step(key, now(), int64(cost)); d != want {
						t.Fatalf("op %d: CheckN(%s, %d) = %+v, algorithm %+v", i, key, cost, d, want)
					}
					if d.Allowed && cost > 0 {
						admitted++
					}
					if d.Delay > 0 {
						delayed++
					}
				case k < 15:
					reqs := make([]flux.Request, 1+r.IntN(8))
					for j := range reqs {
						c := r.IntN(2)
						reqs[j] = flux.Request{Key: keys[r.IntN(len(keys))], Cost: c, Peek: c == 0}
					}
					out := make([]flux.Decision, len(reqs))
					if err := l.CheckBatch(ctx, reqs, out); err != nil {
						t.Fatal(err)
					}
					for j, rq := range reqs {
						if want := m.step(rq.Key, now(), int64(rq.Cost)); out[j] != want {
							t.Fatalf("op %d: batch item %d (%s, %d) = %+v, algorithm %+v", i, j, rq.Key, rq.Cost, out[j], want)
						}
					}
				case k < 17:
					key, at, cost := keys[r.IntN(len(keys))], now()-r.Int64N(int64(c.unit)), 1+r.IntN(2)
					if err := l.Apply(ctx, []flux.Update{{Key: key, At: at, Cost: cost}}); err != nil {
						t.Fatal(err)
					}
					m.apply(key, at, now(), int64(cost))
				case k < 18:
					if lim == c.lim {
						lim = c.lim2
					} else {
						lim = c.lim
					}
					if err := l.SetLimit(ctx, lim); err != nil {
						t.Fatal(err)
					}
					if err := m.setLimit(lim, now()); err != nil {
						t.Fatal(err)
					}
				default:
					key := keys[r.IntN(len(keys))]
					d, err := l.Peek(ctx, key)
					if err != nil {
						t.Fatal(err)
					}
					if want := m.step(key, now(), 0); d != want {
						t.Fatalf("op %d: Peek(%s) = %+v, algorithm %+v", i, key, d, want)
					}
				}
			}
			if admitted < 50 {
				t.Fatalf("only %d admissions: the test exercised little", admitted)
			}
			if (c.lim.Algorithm == flux.LeakyBucket) != (delayed > 0) {
				t.Fatalf("%d decisions with a Delay", delayed)
			}
			if _, err := l.CheckN(ctx, "alice", lim.Capacity()+1); !errors.Is(err, flux.ErrCostExceedsBurst) {
				t.Fatalf("cost above capacity: %v", err)
			}
			// Another algorithm cannot replace a running one.
			if err := l.SetLimit(ctx, c.otherAlgos); !errors.Is(err, flux.ErrAlgorithmChange) {
				t.Fatalf("SetLimit to another algorithm: %v", err)
			}
			if l.Limit() != lim {
				t.Fatalf("limit after a refused change: %+v", l.Limit())
			}
			// A snapshot restored into a new limiter decides as the old one.
			snap, err := l.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			l2, _ := algLimiter(t, lim, flux.WithClock(clk))
			if err := l2.Restore(ctx, snap); err != nil {
				t.Fatal(err)
			}
			for _, key := range keys {
				d1, err1 := l.Peek(ctx, key)
				d2, err2 := l2.Peek(ctx, key)
				if err1 != nil || err2 != nil || d1 != d2 {
					t.Fatalf("%s after restore: %+v (%v), original %+v (%v)", key, d2, err2, d1, err1)
				}
			}
			// A state of another algorithm is refused.
			if len(snap) > 0 {
				other, _ := algLimiter(t, c.otherAlgos)
				if err := other.Restore(ctx, snap); !errors.Is(err, flux.ErrInvalidState) {
					t.Fatalf("restore into %s: %v", c.otherAlgos.Algorithm, err)
				}
			}
			// Long after, every key is idle and cleanup forgets them all.
			busy := m.busy(now())
			clk.Advance(2 * time.Hour)
			if m.busy(now()) != 0 {
				t.Fatal("the model still has a busy key")
			}
			n, err := l.Cleanup(ctx, 0)
			if err != nil || n < busy {
				t.Fatalf("cleanup removed %d (%v); %d keys were busy", n, err, busy)
			}
			// Len reads counters the shards publish after each message.
			for deadline := time.Now().Add(time.Second); l.Len() != 0 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			if l.Len() != 0 {
				t.Fatalf("%d keys left after cleanup", l.Len())
			}
		})
	}
}

// The shared invariants, through the limiter: a denial consumes nothing,
// waiting RetryAfter admits, Remaining never exceeds Limit, and cost n is
// n single checks while admitted.
func TestAlgorithmsInvariantsThroughLimiter(t *testing.T) {
	for _, c := range algCases(t) {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			l, clk := algLimiter(t, c.lim)
			capacity := c.lim.Capacity()
			r := rand.New(rand.NewPCG(22, uint64(len(c.name))))
			for i := range 300 {
				clk.Advance(time.Duration(r.Int64N(int64(c.unit) / 3)))
				key := fmt.Sprint("k", r.IntN(3))
				cost := 1 + r.IntN(capacity)
				before, _ := l.Peek(ctx, key)
				d, err := l.CheckN(ctx, key, cost)
				if err != nil {
					t.Fatal(err)
				}
				if d.Remaining < 0 || d.Remaining > d.Limit || d.Limit != capacity {
					t.Fatalf("op %d: %+v", i, d)
				}
				if d.Allowed {
					continue
				}
				if after, _ := l.Peek(ctx, key); after != before {
					t.Fatalf("op %d: a denial changed the key: %+v → %+v", i, before, after)
				}
				clk.Advance(d.RetryAfter)
				if d2, _ := l.CheckN(ctx, key, cost); !d2.Allowed {
					t.Fatalf("op %d: denied with RetryAfter %v, then denied again: %+v", i, d.RetryAfter, d2)
				}
			}
			// Cost n versus n single checks on twin keys.
			for i := range 50 {
				clk.Advance(time.Duration(r.Int64N(int64(c.unit))))
				n := 1 + r.IntN(capacity)
				a, b := fmt.Sprint("twin-a", i), fmt.Sprint("twin-b", i)
				pre := r.IntN(2)
				for _, k := range []string{a, b} {
					if _, err := l.CheckN(ctx, k, pre); err != nil {
						t.Fatal(err)
					}
				}
				da, _ := l.CheckN(ctx, a, n)
				var db flux.Decision
				for range n {
					db, _ = l.CheckN(ctx, b, 1)
				}
				if da.Allowed && da != db {
					t.Fatalf("cost %d: %+v, %d single checks end with %+v", n, da, n, db)
				}
			}
		})
	}
}

// Textbook scenarios through flux.New.
func TestAlgorithmsTextbook(t *testing.T) {
	ctx := t.Context()
	t.Run("leaky bucket paces", func(t *testing.T) {
		l, clk := algLimiter(t, flux.Limit{Algorithm: flux.LeakyBucket, Rate: 5, Burst: 3})
		var delays []time.Duration
		for range 5 {
			d, _ := l.Check(ctx, "out")
			delays = append(delays, d.Delay)
			if !d.Allowed && d.RetryAfter != 200*time.Millisecond {
				t.Fatalf("full queue: %+v", d)
			}
		}
		want := []time.Duration{0, 200 * time.Millisecond, 400 * time.Millisecond, 600 * time.Millisecond, 0}
		if fmt.Sprint(delays) != fmt.Sprint(want) {
			t.Fatalf("delays %v, want %v", delays, want)
		}
		clk.Advance(200 * time.Millisecond)
		if d, _ := l.Check(ctx, "out"); !d.Allowed || d.Delay != 600*time.Millisecond {
			t.Fatalf("after one slot: %+v", d)
		}
	})
	t.Run("1000 per calendar day in Paris", func(t *testing.T) {
		paris := algLoc(t, "Europe/Paris")
		l, clk := algLimiter(t, flux.Limit{Algorithm: flux.FixedWindow, Limit: 1000, Calendar: flux.CalendarDay, Location: paris})
		clk.Set(time.Date(2025, 3, 29, 23, 0, 0, 0, paris)) // the night clocks go forward
		if d, _ := l.CheckN(ctx, "acct", 1000); !d.Allowed || d.ResetAfter != time.Hour {
			t.Fatalf("%+v", d)
		}
		d, _ := l.Check(ctx, "acct")
		if d.Allowed || d.RetryAfter != time.Hour {
			t.Fatalf("over the daily quota: %+v", d)
		}
		clk.Advance(d.RetryAfter) // 2025-03-30 00:00 +01:00, a 23-hour day
		if d, _ := l.Check(ctx, "acct"); !d.Allowed || d.Remaining != 999 || d.ResetAfter != 23*time.Hour {
			t.Fatalf("next day: %+v", d)
		}
	})
	t.Run("5 logins per minute, no boundary burst", func(t *testing.T) {
		for _, c := range []struct {
			alg  flux.Algorithm
			want int
		}{{flux.SlidingWindowLog, 5}, {flux.SlidingWindow, 5}, {flux.FixedWindow, 10}} {
			l, clk := algLimiter(t, flux.Limit{Algorithm: c.alg, Limit: 5, Window: time.Minute})
			clk.Set(time.Unix(1_700_000_040+50, 0)) // 50 s into a minute
			n := 0
			for range 10 {
				if d, _ := l.Check(ctx, "login"); d.Allowed {
					n++
				}
			}
			clk.Advance(15 * time.Second) // 5 s into the next minute
			for range 10 {
				if d, _ := l.Check(ctx, "login"); d.Allowed {
					n++
				}
			}
			if n != c.want {
				t.Errorf("%s admitted %d within 15 s, want %d", c.alg, n, c.want)
			}
		}
	})
}

// algTimelineLimits are the algorithms of the documentation's timeline, all
// "3 requests, then 1 per second".
var algTimelineLimits = []flux.Limit{
	{Algorithm: flux.GCRA, Rate: 1, Burst: 2},
	{Algorithm: flux.TokenBucket, Rate: 1, Burst: 2},
	{Algorithm: flux.LeakyBucket, Rate: 1, Burst: 2},
	{Algorithm: flux.SlidingWindowLog, Limit: 3, Window: 3 * time.Second},
	{Algorithm: flux.SlidingWindow, Limit: 3, Window: 3 * time.Second},
	{Algorithm: flux.FixedWindow, Limit: 3, Window: 3 * time.Second},
}

// algTimelineArrivals are the request times of the timeline, in ms after a
// window boundary.
var algTimelineArrivals = []int64{0, 0, 0, 0, 500, 1000, 2000, 2900, 3000, 3000, 3500, 4000, 6000, 6000, 6000, 6000}

// algRenderTimeline runs every algorithm over the arrivals and renders the
// Markdown table of docs/ALGORITHMS.md.
func algRenderTimeline(t *testing.T) string {
	var b strings.Builder
	b.WriteString("| t (s) |")
	for _, lim := range algTimelineLimits {
		fmt.Fprintf(&b, " %s |", lim.Algorithm)
	}
	b.WriteString("\n|---|")
	for range algTimelineLimits {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	rows := make([][]string, len(algTimelineArrivals))
	for _, lim := range algTimelineLimits {
		l, clk := algLimiter(t, lim)
		for i, ms := range algTimelineArrivals {
			clk.Set(algT0.Add(time.Duration(ms) * time.Millisecond))
			d, err := l.Check(t.Context(), "k")
			if err != nil {
				t.Fatal(err)
			}
			cell := "✗ " + d.RetryAfter.String()
			if d.Allowed {
				cell = "✓"
				if d.Delay > 0 {
					cell += " +" + d.Delay.String()
				}
			}
			rows[i] = append(rows[i], cell)
		}
	}
	for i, ms := range algTimelineArrivals {
		fmt.Fprintf(&b, "| %.1f | %s |\n", float64(ms)/1000, strings.Join(rows[i], " | "))
	}
	return b.String()
}

// docs/ALGORITHMS.md shows the timeline these algorithms really produce.
// FLUX_UPDATE_DOCS=1 rewrites it.
func TestAlgorithmsTimelineDoc(t *testing.T) {
	const path, begin, end = "docs/ALGORITHMS.md", "<!-- timeline:begin -->\n", "<!-- timeline:end -->"
	table := algRenderTimeline(t)
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i, j := strings.Index(string(doc), begin), strings.Index(string(doc), end)
	if i < 0 || j < i {
		t.Fatalf("%s has no timeline markers", path)
	}
	got := string(doc[i+len(begin) : j])
	if got == table {
		return
	}
	if os.Getenv("FLUX_UPDATE_DOCS") == "1" {
		out := string(doc[:i+len(begin)]) + table + string(doc[j:])
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s's timeline is stale (FLUX_UPDATE_DOCS=1 rewrites it); the algorithms give:\n%s", path, table)
}
