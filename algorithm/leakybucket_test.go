package algorithm_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
)

func mustLeakyBucket(t testing.TB, rate, burst float64) algorithm.LeakyBucket {
	t.Helper()
	q, err := algorithm.NewLeakyBucket(rate, burst)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// Textbook behaviour: 10 per second through a queue of 3 (burst 2).
func TestLeakyBucketTable(t *testing.T) {
	q := mustLeakyBucket(t, 10, 2.9) // the fraction is dropped: a queue of 3
	h := newHarness(t, q, nil, q.Interval())
	T := 100 * time.Millisecond
	now := t0
	s := q.Fresh(now)
	type want struct {
		advance   time.Duration
		cost      int64
		ok        bool
		delay     time.Duration
		remaining int
		retry     time.Duration
		reset     time.Duration
	}
	for i, w := range []want{
		{0, 0, true, 0, 3, 0, 0},         // an empty queue: act at once
		{0, 1, true, 0, 2, 0, T},         // first request leaves now
		{0, 1, true, T, 1, 0, 2 * T},     // second after one slot
		{0, 1, true, 2 * T, 0, 0, 3 * T}, // third after two
		{0, 1, false, 0, 0, T, 3 * T},    // the queue is full
		{T - 1, 1, false, 0, 0, 1, 2*T + 1},
		{1, 1, true, 2 * T, 0, 0, 3 * T}, // the first slot ended: room for one
		{T / 2, 0, false, 0, 0, T / 2, 2*T + T/2},
		{T / 2, 0, true, 2 * T, 1, 0, 2 * T}, // a peek tells the delay it would get
		{5 * T, 3, true, 2 * T, 0, 0, 3 * T}, // cost 3: acts when its last unit's slot begins
		{T, 2, false, 0, 1, T, 2 * T},
	} {
		now += int64(w.advance)
		var d algorithm.Decision
		s, d = h.step(s, now, w.cost)
		if d.Allowed != w.ok || d.Delay != w.delay || d.Remaining != w.remaining || d.RetryAfter != w.retry || d.ResetAfter != w.reset || d.Limit != 3 {
			t.Fatalf("step %d (cost %d): got %s, want %+v", i, w.cost, describe(d), w)
		}
	}
}

// Callers that act after Delay leave at most one unit per T, whatever the
// arrival pattern: the point of a shaping queue.
func TestLeakyBucketShapes(t *testing.T) {
	q := mustLeakyBucket(t, 50, 9)
	T := q.Interval()
	r := rand.New(rand.NewPCG(3, 4))
	now, s := t0, q.Fresh(t0)
	var acts []int64 // when each unit's slot begins
	admitted := 0
	for range 20000 {
		now += int64(r.ExpFloat64() * float64(T) / 1.5) // offered: 1.5× the rate
		cost := int64(1 + r.IntN(2))
		var d algorithm.Decision
		s, d, _ = q.Step(s, now, cost)
		if d.Allowed {
			admitted += int(cost)
			last := now + int64(d.Delay)
			for i := cost - 1; i >= 0; i-- {
				acts = append(acts, last-i*T)
			}
		}
	}
	for i := 1; i < len(acts); i++ {
		if acts[i]-acts[i-1] < T {
			t.Fatalf("units %d and %d act %v apart, less than T = %v", i-1, i, time.Duration(acts[i]-acts[i-1]), time.Duration(T))
		}
	}
	// Offered 1.5× the rate for long, the queue keeps the output at the
	// rate: within a few percent of (elapsed / T).
	if want := float64(now-t0) / float64(T); float64(admitted) < 0.97*want || float64(admitted) > want+10 {
		t.Fatalf("admitted %d units in %v, the rate allows %.0f", admitted, time.Duration(now-t0), want)
	}
}

// refQueue is a plain queue of slots: each queued unit owns [end−T, end).
type refQueue struct {
	t, c int64
	ends []int64
	last int64 // end of the last slot handed out
}

func (r *refQueue) live(now int64) []int64 {
	var l []int64
	for _, e := range r.ends {
		if e > now {
			l = append(l, e)
		}
	}
	r.ends = l
	return l
}

func (r *refQueue) queue(from, cost int64) int64 {
	start := max(r.last, from)
	for i := range cost {
		r.ends = append(r.ends, start+(i+1)*r.t)
	}
	if cost > 0 {
		r.last = start + cost*r.t
	}
	return start
}

func (r *refQueue) check(now, cost int64) algorithm.Decision {
	l := r.live(now)
	n := int64(len(l))
	c := max(cost, 1)
	d := algorithm.Decision{Limit: int(r.c), Remaining: int(max(r.c-n, 0))}
	if r.last > now {
		d.ResetAfter = time.Duration(r.last - now)
	}
	if n+c > r.c {
		d.RetryAfter = time.Duration(l[n+c-r.c-1] - now)
		return d
	}
	d.Allowed = true
	if cost == 0 {
		if r.last > now {
			d.Delay = time.Duration(r.last - now)
		}
		return d
	}
	start := r.queue(now, cost)
	d.Delay = time.Duration(start + (cost-1)*r.t - now)
	d.Remaining = int(r.c - n - cost)
	d.ResetAfter = time.Duration(r.last - now)
	return d
}

func runLeakyBucket(t testing.TB, rate, burst float64, prog []byte) {
	qs := [2]algorithm.LeakyBucket{mustLeakyBucket(t, rate, burst), mustLeakyBucket(t, rate*3, math.Floor(burst/3))}
	cur := 0
	now := t0
	h := newHarness(t, qs[0], nil, qs[0].Interval()*qs[0].Capacity())
	s := qs[0].Fresh(now)
	ref := &refQueue{t: qs[0].Interval(), c: qs[0].Capacity(), last: math.MinInt64}
	for i, o := range decodeOps(prog) {
		q := qs[cur]
		switch o.kind {
		case 0:
			now += advance(o, q.Interval()*q.Capacity())
		case 1:
			cost := int64(o.a) % (q.Capacity() + 1)
			var d algorithm.Decision
			s, d = h.step(s, now, cost)
			if dr := ref.check(now, cost); d != dr {
				t.Fatalf("op %d: cost %d at %d: leaky bucket %s, reference %s", i, cost, now, describe(d), describe(dr))
			}
		case 2:
			at := now - int64(o.b%8)*q.Interval()/3
			cost := int64(o.a) % (2*q.Capacity() + 1)
			s = h.apply(s, at, now, cost)
			ref.queue(at, cost)
		case 3:
			next := 1 - cur
			_, before, _ := qs[cur].Step(s, now, 0)
			s = qs[next].Rebase(s, now, qs[cur])
			cur = next
			h = newHarness(t, qs[cur], nil, qs[cur].Interval()*qs[cur].Capacity())
			_, after, _ := qs[cur].Step(s, now, 0)
			// Units queued stay queued (as slots of the new rate, capped at
			// the new queue): no key gains room.
			if want := max(after.Limit-(before.Limit-before.Remaining), 0); after.Remaining > want {
				t.Fatalf("op %d: rebase: %s → %s, want Remaining ≤ %d", i, describe(before), describe(after), want)
			}
			// The reference restarts from the queue the rebase left.
			ref = &refQueue{t: qs[cur].Interval(), c: qs[cur].Capacity(), last: s}
			if s > now {
				n := (s - now + ref.t - 1) / ref.t
				for k := n - 1; k >= 0; k-- {
					ref.ends = append(ref.ends, s-k*ref.t)
				}
			}
		}
	}
}

func TestLeakyBucketReference(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, p := range [][2]float64{{10, 2}, {2, 0}, {1, 0}, {3, 2.5}, {1000, 99}, {7, 0.3}, {1e6, 1000}, {3e8, 7}, {1.0 / 86400, 10}} {
		for range 25 {
			runLeakyBucket(t, p[0], p[1], randomOps(r, 150))
		}
	}
}

func FuzzLeakyBucket(f *testing.F) {
	f.Add(uint32(1000), uint16(50), []byte("\x01\x01\x00\x01\x01\x00\x00\x01\x10"))
	f.Fuzz(func(t *testing.T, rate uint32, burst uint16, prog []byte) {
		runLeakyBucket(t, float64(rate%1_000_000+1)/100, float64(burst%2000)/10, prog)
	})
}
