package algorithm_test

import (
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
)

func mustSlidingWindow(t testing.TB, limit int64, w time.Duration) algorithm.SlidingWindow {
	t.Helper()
	sw, err := algorithm.NewSlidingWindow(limit, w)
	if err != nil {
		t.Fatal(err)
	}
	return sw
}

// floorTo returns t rounded down to a multiple of w.
func floorTo(t, w int64) int64 {
	q := t / w
	if t%w != 0 && t < 0 {
		q--
	}
	return q * w
}

// Textbook behaviour: 10 per minute, the previous minute weighted by the
// part of it still inside the sliding window.
func TestSlidingWindowTable(t *testing.T) {
	W := time.Minute
	sw := mustSlidingWindow(t, 10, W)
	h := newHarness(t, sw, nil, int64(W))
	base := floorTo(t0, int64(W)) // a window starts here
	s := sw.Fresh(base)
	type want struct {
		at        time.Duration // since base
		cost      int64
		ok        bool
		remaining int
		retry     time.Duration
		reset     time.Duration
	}
	for i, w := range []want{
		{-30 * time.Second, 10, true, 0, 0, 90 * time.Second},               // 10 in the previous window
		{15 * time.Second, 0, true, 2, 0, 45 * time.Second},                 // ⌈10·45/60⌉ = 8 still count
		{15 * time.Second, 2, true, 0, 0, 105 * time.Second},                // 8 + 2
		{15 * time.Second, 1, false, 0, 3 * time.Second, 105 * time.Second}, // 10·42/60 = 7 at 18 s
		{18*time.Second - 1, 1, false, 0, 1, 102*time.Second + 1},           //
		{18 * time.Second, 1, true, 0, 0, 102 * time.Second},                // 7 + 3
		{59 * time.Second, 0, true, 6, 0, 61 * time.Second},                 // ⌈10/60⌉ + 3 = 4
		{59 * time.Second, 8, false, 6, 21 * time.Second, 61 * time.Second}, // next window: ⌈3·40/60⌉ + 8 = 10 at 20 s
		{80 * time.Second, 8, true, 0, 0, 100 * time.Second},                //
		{3 * time.Minute, 10, true, 0, 0, 2 * time.Minute},                  // long idle: a fresh start
	} {
		var d algorithm.Decision
		s, d = h.step(s, base+int64(w.at), w.cost)
		if d.Allowed != w.ok || d.Remaining != w.remaining || d.RetryAfter != w.retry || d.ResetAfter != w.reset || d.Limit != 10 {
			t.Fatalf("step %d (cost %d at %v): got %s, want %+v", i, w.cost, w.at, describe(d), w)
		}
	}
}

// The documented error bound: in any interval of length W ending a
// fraction f into a window whose predecessor admitted p requests, at most
// Limit + ⌊p·f⌋ are admitted (so never 2·Limit), and the bound is reached.
func TestSlidingWindowErrorBound(t *testing.T) {
	const limit = 10
	W := int64(time.Minute)
	sw := mustSlidingWindow(t, limit, time.Duration(W))
	r := rand.New(rand.NewPCG(11, 12))
	worst := 0
	for run := range 200 {
		now := floorTo(t0, W)
		s := sw.Fresh(now)
		var admitted []int64
		perWindow := map[int64]int64{}
		for range 400 {
			// Bursty arrivals, often piled up at the end of a window.
			switch r.IntN(4) {
			case 0:
				now = floorTo(now, W) + W - 1 - int64(r.IntN(1000))
				if now < admitted0(admitted) {
					now = admitted0(admitted)
				}
			default:
				now += int64(r.ExpFloat64() * float64(W) / 20)
			}
			cost := int64(1 + r.IntN(3))
			var d algorithm.Decision
			s, d, _ = sw.Step(s, now, cost)
			if !d.Allowed {
				continue
			}
			for range cost {
				admitted = append(admitted, now)
			}
			perWindow[floorTo(now, W)] += cost
			// Count the true sliding window ending now.
			n := 0
			for i := len(admitted) - 1; i >= 0 && admitted[i] > now-W; i-- {
				n++
			}
			start := floorTo(now, W)
			p := perWindow[start-W]
			bound := limit + p*(now-start)/W
			if int64(n) > bound || n > 2*limit-1 {
				t.Fatalf("run %d: %d admitted in the %v ending %d, bound %d (p = %d, f = %.3f)", run, n, time.Duration(W), now, bound, p, float64(now-start)/float64(W))
			}
			worst = max(worst, n)
		}
	}
	if worst <= limit {
		t.Fatalf("the random load never went past the limit (worst %d): the test lost its teeth", worst)
	}
	// The worst case, built on purpose: Limit at the very end of a window,
	// then Limit−1 at the end of the next: 2·Limit−1 within W.
	start := floorTo(t0, W)
	s := sw.Fresh(start)
	s, d, _ := sw.Step(s, start+W-1, limit)
	if !d.Allowed {
		t.Fatal(describe(d))
	}
	if _, d, _ = sw.Step(s, start+2*W-2, limit-1); !d.Allowed {
		t.Fatalf("2·Limit−1 within W not reached: %s", describe(d))
	}
}

func admitted0(a []int64) int64 {
	if len(a) == 0 {
		return 0
	}
	return a[len(a)-1]
}

// refWindow counts requests per aligned window and estimates with exact
// rationals; waits are found by search, not by formula.
type refWindow struct {
	limit, w int64
	counts   map[int64]int64
}

func (r *refWindow) est(now int64) (used int64, cur, prev int64) {
	start := floorTo(now, r.w)
	cur, prev = r.counts[start], r.counts[start-r.w]
	x := new(big.Rat).SetFrac64(prev*(r.w-(now-start))/1, 1)
	x.Quo(x, new(big.Rat).SetInt64(r.w))
	ceil := new(big.Int).Quo(x.Num(), x.Denom())
	if !x.IsInt() {
		ceil.Add(ceil, big.NewInt(1))
	}
	return cur + ceil.Int64(), cur, prev
}

// search returns the smallest d in [lo, hi] with ok(d), assuming ok is
// monotone and ok(hi).
func search(lo, hi int64, ok func(int64) bool) int64 {
	for lo < hi {
		m := lo + (hi-lo)/2
		if ok(m) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

func (r *refWindow) check(now, cost int64) algorithm.Decision {
	used, _, _ := r.est(now)
	c := max(cost, 1)
	d := algorithm.Decision{Limit: int(r.limit), Remaining: int(min(max(r.limit-used, 0), r.limit))}
	reset := func() {
		if u, _, _ := r.est(now); u > 0 {
			d.ResetAfter = time.Duration(search(1, 3*r.w, func(x int64) bool { u, _, _ := r.est(now + x); return u == 0 }))
		}
	}
	if used+c > r.limit {
		d.RetryAfter = time.Duration(search(1, 3*r.w, func(x int64) bool { u, _, _ := r.est(now + x); return u+c <= r.limit }))
		reset()
		return d
	}
	d.Allowed = true
	if cost > 0 {
		r.counts[floorTo(now, r.w)] += cost
		d.Remaining = int(r.limit - used - cost)
	}
	reset()
	return d
}

func runSlidingWindow(t testing.TB, limit int64, w time.Duration, prog []byte) {
	sws := [2]algorithm.SlidingWindow{mustSlidingWindow(t, limit, w), mustSlidingWindow(t, max(limit/2, 1), w)}
	if limit%3 == 0 { // sometimes change the window length too
		sws[1] = mustSlidingWindow(t, limit+2, w*5/2)
	}
	cur := 0
	now := t0
	h := newHarness(t, sws[0], nil, int64(w))
	s := sws[0].Fresh(now)
	ref := &refWindow{limit: limit, w: int64(w), counts: map[int64]int64{}}
	for i, o := range decodeOps(prog) {
		sw := sws[cur]
		switch o.kind {
		case 0:
			now += advance(o, sw.Window())
		case 1:
			cost := int64(o.a) % (sw.Capacity() + 1)
			var d algorithm.Decision
			s, d = h.step(s, now, cost)
			if ref != nil {
				if dr := ref.check(now, cost); d != dr {
					t.Fatalf("op %d: cost %d at %d: sliding window %s, reference %s (state %+v)", i, cost, now, describe(d), describe(dr), s)
				}
			}
		case 2:
			at := now - int64(o.b)*sw.Window()/64
			cost := int64(o.a) % (2*sw.Capacity() + 1)
			s = h.apply(s, at, now, cost)
			if ref != nil {
				ref.counts[floorTo(at, ref.w)] += cost
			}
		case 3:
			next := 1 - cur
			_, before, _ := sws[cur].Step(s, now, 0)
			s = sws[next].Rebase(s, now, sws[cur])
			cur = next
			h = newHarness(t, sws[cur], nil, sws[cur].Window())
			_, after, _ := sws[cur].Step(s, now, 0)
			// The key keeps the requests it used (the estimate): exactly,
			// unless remote admissions took it past the old limit.
			want := max(after.Limit-(before.Limit-before.Remaining), 0)
			if after.Remaining > want || before.Remaining > 0 && after.Remaining != want {
				t.Fatalf("op %d: rebase: %s → %s, want Remaining %d", i, describe(before), describe(after), want)
			}
			if sws[0].Window() == sws[1].Window() {
				ref.limit = sws[cur].Capacity() // the counts carry over as they are
			} else {
				ref = nil // a collapsed state: only the invariants from here
			}
		}
	}
}

func TestSlidingWindowReference(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, p := range []struct {
		limit int64
		w     time.Duration
	}{{1, time.Second}, {10, time.Minute}, {5, time.Minute}, {20, time.Millisecond}, {100, time.Hour}, {7, 3}, {1000, 24 * time.Hour}} {
		for range 20 {
			runSlidingWindow(t, p.limit, p.w, randomOps(r, 120))
		}
	}
}

func FuzzSlidingWindow(f *testing.F) {
	f.Add(uint16(10), uint32(60_000), []byte("\x01\x01\x00\x01\x01\x00\x00\x01\x10"))
	f.Fuzz(func(t *testing.T, limit uint16, windowMs uint32, prog []byte) {
		runSlidingWindow(t, int64(limit%500)+1, time.Duration(windowMs%86_400_000+1)*time.Millisecond, prog)
	})
}
