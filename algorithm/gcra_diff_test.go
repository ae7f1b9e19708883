package algorithm

import (
	"math/rand/v2"
	"testing"
	"time"
)

// refBucket is a plain reference model of GCRA written another way: instead
// of an absolute theoretical arrival time it keeps each key's backlog L (in
// ns), which drains one nanosecond per nanosecond. A request of cost n is
// admitted iff L + n·T ≤ τ + T.
type refBucket struct {
	t, tau, capacity int64
	backlog          map[string]int64
	last             int64
}

func (r *refBucket) advance(now int64) {
	for k, l := range r.backlog {
		l -= now - r.last
		if l <= 0 {
			delete(r.backlog, k)
		} else {
			r.backlog[k] = l
		}
	}
	r.last = now
}

func (r *refBucket) check(key string, cost int64) Decision {
	l := r.backlog[key]
	limit := r.tau + r.t
	want := cost
	if cost == 0 {
		want = 1
	}
	d := Decision{Limit: int(r.capacity)}
	if l+want*r.t <= limit {
		d.Allowed = true
		if cost > 0 {
			l += cost * r.t
			r.backlog[key] = l
		}
	} else {
		d.RetryAfter = time.Duration(l + want*r.t - limit)
	}
	d.Remaining = int(min(max((limit-l)/r.t, 0), r.capacity))
	d.ResetAfter = time.Duration(l)
	return d
}

func TestGCRADifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for round := range 300 {
		rate := []float64{1, 3, 7.5, 10, 100, 1e3, 1e6, 3e8, 1e9}[rng.IntN(9)]
		burst := float64(rng.IntN(12))
		if rng.IntN(2) == 0 {
			burst += rng.Float64()
		}
		g := mustGCRA(t, rate, burst)
		ref := &refBucket{t: g.Interval(), tau: g.Tolerance(), capacity: g.Capacity(), backlog: map[string]int64{}}
		states := map[string]int64{}
		now := int64(1_700_000_000e9) + rng.Int64N(1e12)
		ref.last = now
		keys := []string{"a", "b", "c", "d"}
		for op := range 400 {
			switch rng.IntN(4) {
			case 0: // advance by up to a few intervals
				now += rng.Int64N(3*g.Interval() + 2)
				ref.advance(now)
			default:
				key := keys[rng.IntN(len(keys))]
				cost := rng.Int64N(g.Capacity() + 1)
				st, ok := states[key]
				if !ok {
					st = g.Fresh(now)
				}
				next, got, changed := g.Step(st, now, cost)
				want := ref.check(key, cost)
				if got != want {
					t.Fatalf("round %d op %d (rate %v burst %v, key %s cost %d): got %+v, model %+v",
						round, op, rate, burst, key, cost, got, want)
				}
				if changed != (want.Allowed && cost > 0) {
					t.Fatalf("round %d op %d: changed=%v for %+v cost %d", round, op, changed, want, cost)
				}
				states[key] = next
			}
		}
	}
}
