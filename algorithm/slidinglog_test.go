package algorithm_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
)

func mustSlidingLog(t testing.TB, limit int64, w time.Duration) algorithm.SlidingLog {
	t.Helper()
	l, err := algorithm.NewSlidingLog(limit, w)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Textbook behaviour: 3 per 10 s, exact, with no boundary bursts.
func TestSlidingLogTable(t *testing.T) {
	l := mustSlidingLog(t, 3, 10*time.Second)
	h := newHarness(t, l, slices.Clone, l.Window())
	s := l.Fresh(t0)
	type want struct {
		at        time.Duration // since t0
		cost      int64
		ok        bool
		remaining int
		retry     time.Duration
		reset     time.Duration
	}
	for i, w := range []want{
		{0, 0, true, 3, 0, 0},
		{0, 1, true, 2, 0, 10 * time.Second},
		{time.Second, 1, true, 1, 0, 10 * time.Second},
		{2 * time.Second, 1, true, 0, 0, 10 * time.Second},
		{3 * time.Second, 1, false, 0, 7 * time.Second, 9 * time.Second}, // the first expires at 10 s
		{10*time.Second - 1, 1, false, 0, 1, 2*time.Second + 1},
		{10 * time.Second, 0, true, 1, 0, 2 * time.Second},
		{10 * time.Second, 1, true, 0, 0, 10 * time.Second},
		{10 * time.Second, 2, false, 0, 2 * time.Second, 10 * time.Second}, // needs the 1 s and 2 s entries gone
		{12 * time.Second, 2, true, 0, 0, 10 * time.Second},
		{30 * time.Second, 3, true, 0, 0, 10 * time.Second},
	} {
		var d algorithm.Decision
		s, d = h.step(s, t0+int64(w.at), w.cost)
		if d.Allowed != w.ok || d.Remaining != w.remaining || d.RetryAfter != w.retry || d.ResetAfter != w.reset || d.Limit != 3 {
			t.Fatalf("step %d (cost %d at %v): got %s, want %+v", i, w.cost, w.at, describe(d), w)
		}
	}
	if len(s) != 3 || s[0] != t0+int64(30*time.Second) {
		t.Fatalf("log %v", s)
	}
}

// No window of length W, wherever it starts, sees more than Limit
// admissions: checked against the full history of a random, bursty load.
func TestSlidingLogExactInEveryWindow(t *testing.T) {
	const limit = 5
	w := time.Minute
	l := mustSlidingLog(t, limit, w)
	r := rand.New(rand.NewPCG(7, 8))
	now, s := t0, l.Fresh(t0)
	var admitted []int64
	for range 5000 {
		now += int64(r.ExpFloat64() * float64(w) / 8)
		var d algorithm.Decision
		s, d, _ = l.Step(s, now, 1)
		if d.Allowed {
			admitted = append(admitted, now)
		}
		if len(s) > limit || cap(s) > 2*limit+8 {
			t.Fatalf("log of %d entries (capacity %d) for a limit of %d", len(s), cap(s), limit)
		}
	}
	for i := range admitted {
		j := i
		for j < len(admitted) && admitted[j]-admitted[i] < int64(w) {
			j++
		}
		if j-i > limit {
			t.Fatalf("%d admissions within %v from %d", j-i, w, admitted[i])
		}
	}
	if len(admitted) < 1000 {
		t.Fatalf("only %d admitted: the load did not saturate the limit", len(admitted))
	}
}

// A state handed out (say, to a snapshot) keeps its entries while the
// shard goes on stepping the states that follow it.
func TestSlidingLogStatesAreStable(t *testing.T) {
	l := mustSlidingLog(t, 8, time.Second)
	now := t0
	s := l.Fresh(now)
	var kept [][]int64
	var copies [][]int64
	for i := range 200 {
		now += int64(time.Second) / 10
		s, _, _ = l.Step(s, now, int64(1+i%3))
		s = l.Apply(s, now-int64(i%2)*int64(time.Millisecond), 1)
		kept = append(kept, s)
		copies = append(copies, slices.Clone(s))
	}
	for i := range kept {
		if !slices.Equal(kept[i], copies[i]) {
			t.Fatalf("state %d changed after it was handed out: %v, was %v", i, kept[i], copies[i])
		}
	}
}

// refLog keeps every admission ever made.
type refLog struct {
	limit, w int64
	all      []int64 // sorted
}

func (r *refLog) live(now int64) []int64 {
	var l []int64
	for _, t := range r.all {
		if t > now-r.w {
			l = append(l, t)
		}
	}
	return l
}

func (r *refLog) add(at, cost int64) {
	for range cost {
		i, _ := slices.BinarySearch(r.all, at+1)
		r.all = slices.Insert(r.all, i, at)
	}
}

func (r *refLog) check(now, cost int64) algorithm.Decision {
	l := r.live(now)
	n := int64(len(l))
	c := max(cost, 1)
	d := algorithm.Decision{Limit: int(r.limit), Remaining: int(max(r.limit-n, 0))}
	if n > 0 {
		d.ResetAfter = time.Duration(l[n-1] + r.w - now)
	}
	if n+c > r.limit {
		d.RetryAfter = time.Duration(l[n+c-r.limit-1] + r.w - now)
		return d
	}
	d.Allowed = true
	if cost > 0 {
		r.add(now, cost)
		d.Remaining = int(r.limit - n - cost)
		d.ResetAfter = time.Duration(r.w)
	}
	return d
}

func runSlidingLog(t testing.TB, limit int64, w time.Duration, prog []byte) {
	ls := [2]algorithm.SlidingLog{mustSlidingLog(t, limit, w), mustSlidingLog(t, max(limit/2, 1), w*3)}
	cur := 0
	now := t0
	h := newHarness(t, ls[0], slices.Clone, int64(w))
	s := ls[0].Fresh(now)
	ref := &refLog{limit: limit, w: int64(w)}
	for i, o := range decodeOps(prog) {
		l := ls[cur]
		switch o.kind {
		case 0:
			now += advance(o, l.Window())
		case 1:
			cost := int64(o.a) % (l.Capacity() + 1)
			var d algorithm.Decision
			s, d = h.step(s, now, cost)
			if dr := ref.check(now, cost); d != dr {
				t.Fatalf("op %d: cost %d at %d: sliding log %s, reference %s (log %v)", i, cost, now, describe(d), describe(dr), s)
			}
			if int64(len(s)) > l.Capacity() {
				t.Fatalf("op %d: %d entries for a limit of %d", i, len(s), l.Capacity())
			}
		case 2:
			at := now - int64(o.b)*l.Window()/64
			cost := int64(o.a) % (2*l.Capacity() + 1)
			s = h.apply(s, at, now, cost)
			ref.add(at, cost)
		case 3:
			next := 1 - cur
			_, before, _ := ls[cur].Step(slices.Clone(s), now, 0)
			live := 0 // entries that count under both windows
			for _, e := range s {
				if e > now-min(ls[cur].Window(), ls[next].Window()) {
					live++
				}
			}
			s = ls[next].Rebase(s, now, ls[cur])
			cur = next
			h = newHarness(t, ls[cur], slices.Clone, ls[cur].Window())
			_, after, _ := ls[cur].Step(slices.Clone(s), now, 0)
			// The entries that count under both windows are kept: no key
			// gains room beyond what the new limit gives that history.
			if want := max(after.Limit-live, 0); after.Remaining != want {
				t.Fatalf("op %d: rebase: %s → %s, want Remaining %d", i, describe(before), describe(after), want)
			}
			if ls[cur].Window() >= ls[1-cur].Window() {
				if want := max(after.Limit-(before.Limit-before.Remaining), 0); after.Remaining > want {
					t.Fatalf("op %d: rebase to a longer window: %s → %s", i, describe(before), describe(after))
				}
			}
			ref = &refLog{limit: ls[cur].Capacity(), w: ls[cur].Window(), all: slices.Clone(s)}
		}
	}
}

func TestSlidingLogReference(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, p := range []struct {
		limit int64
		w     time.Duration
	}{{1, time.Second}, {3, 10 * time.Second}, {5, time.Minute}, {20, time.Millisecond}, {100, time.Hour}, {7, 3}} {
		for range 25 {
			runSlidingLog(t, p.limit, p.w, randomOps(r, 150))
		}
	}
}

func FuzzSlidingLog(f *testing.F) {
	f.Add(uint16(5), uint32(60_000), []byte("\x01\x01\x00\x01\x01\x00\x00\x01\x10"))
	f.Fuzz(func(t *testing.T, limit uint16, windowMs uint32, prog []byte) {
		runSlidingLog(t, int64(limit%200)+1, time.Duration(windowMs%(86_400_000)+1)*time.Millisecond, prog)
	})
}
