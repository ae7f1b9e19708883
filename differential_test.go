package flux_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
)

// model is a plain reference for GCRA written from its definition with a
// per-key backlog instead of an absolute TAT: a request of cost n is
// admitted iff backlog + n·T ≤ τ + T, and the backlog drains with time.
type model struct {
	t, tau, capacity int64
	backlog          map[string]int64
}

func (m *model) advance(d int64) {
	for k, b := range m.backlog {
		if b -= d; b <= 0 {
			delete(m.backlog, k)
		} else {
			m.backlog[k] = b
		}
	}
}

func (m *model) check(key string, cost int64) flux.Decision {
	b := m.backlog[key]
	want := max(cost, 1)
	d := flux.Decision{Limit: int(m.capacity)}
	if b+want*m.t <= m.tau+m.t {
		d.Allowed = true
		if cost > 0 {
			b += cost * m.t
			m.backlog[key] = b
		}
	} else {
		d.RetryAfter = time.Duration(b + want*m.t - m.tau - m.t)
	}
	d.Remaining = int(min(max((m.tau+m.t-b)/m.t, 0), m.capacity))
	d.ResetAfter = time.Duration(b)
	return d
}

// TestDifferential drives a Limiter (several shards, single checks and
// batches mixed) and the model with the same random sequence of clock
// advances, keys and costs, and requires identical decisions.
func TestDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for round := range 40 {
		rate := []float64{0.5, 1, 3, 10, 250, 1e4, 1e6, 1e9}[rng.IntN(8)]
		burst := float64(rng.IntN(8)) + []float64{0, 0.5, 0.25}[rng.IntN(3)]
		lim := flux.Limit{Rate: rate, Burst: burst}
		l, clk := newLimiter(t, lim, flux.WithShards(1+rng.IntN(4)))
		tNs := int64(1e9/rate + 0.5)
		tau := int64(burst) * tNs
		tau += int64((burst - float64(int64(burst))) * float64(tNs))
		m := &model{t: tNs, tau: tau, capacity: int64(lim.Capacity()), backlog: map[string]int64{}}
		keys := []string{"a", "b", "c", "d", "e"}
		for op := range 300 {
			switch r := rng.IntN(10); {
			case r < 3:
				d := rng.Int64N(2*tNs + 1)
				clk.Advance(time.Duration(d))
				m.advance(d)
			case r < 7:
				key := keys[rng.IntN(len(keys))]
				cost := rng.IntN(int(m.capacity) + 1)
				got := check(t, l, key, cost)
				if want := m.check(key, int64(cost)); got != want {
					t.Fatalf("round %d op %d %+v key %s cost %d: limiter %+v, model %+v", round, op, lim, key, cost, got, want)
				}
			default:
				n := 1 + rng.IntN(8)
				reqs := make([]flux.Request, n)
				for i := range reqs {
					c := rng.IntN(int(m.capacity) + 1)
					reqs[i] = flux.Request{Key: keys[rng.IntN(len(keys))], Cost: c, Peek: c == 0}
				}
				out := make([]flux.Decision, n)
				if err := l.CheckBatch(t.Context(), reqs, out); err != nil {
					t.Fatal(err)
				}
				for i, r := range reqs {
					if want := m.check(r.Key, int64(r.Cost)); out[i] != want {
						t.Fatalf("round %d op %d batch item %d %s: limiter %+v, model %+v", round, op, i, fmt.Sprint(r), out[i], want)
					}
				}
			}
		}
	}
}
