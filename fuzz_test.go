package flux_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
)

// FuzzLimiter drives a Limiter through the public API with arbitrary
// bytes: checks, peeks and batches of arbitrary keys (empty ones and ones
// over the length bound included) and costs (negative, above the
// capacity), clock advances and Cleanup, against the reference model of
// TestDifferential. Valid requests must get the model's decision; invalid
// ones an error wrapping the matching sentinel, with nothing applied (a
// batch with one invalid item applies none). Nothing may panic.
func FuzzLimiter(f *testing.F) {
	f.Add(uint8(3), uint8(2), []byte{0, 'a', 1, 0, 'a', 1, 2, 5, 0, 'a', 0})
	f.Add(uint8(0), uint8(0), []byte{3, 3, 'a', 1, 'b', 0xff, 'c', 1, 0, 0, 1})
	f.Add(uint8(7), uint8(5), []byte{1, 'k', 9, 2, 200, 1, 'k', 2, 4, 10, 0, 0, 1})
	f.Add(uint8(1), uint8(7), []byte{0, 'x', 0x80, 3, 2, 'x', 1, 'y', 2, 4, 1})
	f.Fuzz(func(t *testing.T, rateSel, burstSel uint8, ops []byte) {
		rate := []float64{0.5, 1, 3, 10, 250, 1e4, 1e6, 1e9}[rateSel%8]
		burst := float64(burstSel%8) + []float64{0, 0.5, 0.25}[int(burstSel/8)%3]
		lim := flux.Limit{Rate: rate, Burst: burst}
		const maxKey = 8
		l, clk := newLimiter(t, lim, flux.WithShards(2), flux.WithMaxKeyLen(maxKey))
		tNs := int64(1e9/rate + 0.5)
		tau := int64(burst)*tNs + int64((burst-float64(int64(burst)))*float64(tNs))
		m := &model{t: tNs, tau: tau, capacity: int64(lim.Capacity()), backlog: map[string]int64{}}
		next := func() byte {
			if len(ops) == 0 {
				return 0
			}
			b := ops[0]
			ops = ops[1:]
			return b
		}
		// A key: one byte picks a letter and a length (0: empty, 15: over
		// the bound); a cost: a signed byte, so negative and huge ones come.
		key := func() string {
			b := next()
			return strings.Repeat(string(rune('a'+b%4)), int(b>>4)%(maxKey+2))
		}
		cost := func() int { return int(int8(next())) }
		wantErr := func(k string, c int) error {
			switch {
			case k == "":
				return flux.ErrEmptyKey
			case len(k) > maxKey:
				return flux.ErrKeyTooLong
			case c < 0:
				return flux.ErrInvalidCost
			case int64(c) > m.capacity:
				return flux.ErrCostExceedsBurst
			}
			return nil
		}
		ctx := t.Context()
		for len(ops) > 0 {
			switch op := next() % 5; op {
			case 0, 1: // CheckN (0 peeks) or Peek
				k, c := key(), cost()
				if op == 1 {
					c = 0
				}
				var d flux.Decision
				var err error
				if op == 1 {
					d, err = l.Peek(ctx, k)
				} else {
					d, err = l.CheckN(ctx, k, c)
				}
				if want := wantErr(k, c); want != nil || err != nil {
					if !errors.Is(err, want) || want == nil {
						t.Fatalf("CheckN(%q, %d): %v, want %v", k, c, err, want)
					}
					continue
				}
				if want := m.check(k, int64(c)); d != want {
					t.Fatalf("CheckN(%q, %d): %+v, model %+v", k, c, d, want)
				}
			case 2: // a batch of up to 7 items
				reqs := make([]flux.Request, int(next()%8))
				bad := -1
				var badErr error
				for i := range reqs {
					reqs[i] = flux.Request{Key: key(), Cost: cost()}
					reqs[i].Peek = reqs[i].Cost == 0
					if err := wantErr(reqs[i].Key, reqs[i].Cost); err != nil && bad < 0 {
						bad, badErr = i, err
					}
				}
				out := make([]flux.Decision, len(reqs))
				err := l.CheckBatch(ctx, reqs, out)
				if bad >= 0 {
					var be *flux.BatchError
					if !errors.As(err, &be) || be.Index != bad || !errors.Is(err, badErr) {
						t.Fatalf("CheckBatch(%v): %v, want item %d: %v", reqs, err, bad, badErr)
					}
					continue // nothing applied: the model does not move either
				}
				if err != nil {
					t.Fatalf("CheckBatch(%v): %v", reqs, err)
				}
				for i, r := range reqs {
					if want := m.check(r.Key, int64(r.Cost)); out[i] != want {
						t.Fatalf("CheckBatch item %d %+v: %+v, model %+v", i, r, out[i], want)
					}
				}
			case 3: // the clock moves on, by up to 2.5 T
				d := int64(next()) * (tNs/100 + 1)
				clk.Advance(time.Duration(d))
				m.advance(d)
			case 4: // Cleanup forgets only keys equal to fresh ones
				if _, err := l.Cleanup(ctx, 0); err != nil {
					t.Fatalf("Cleanup: %v", err)
				}
			}
		}
		// Cleanup(0) removes exactly the keys whose state equals a fresh
		// one: what is left is what the model still has a backlog for.
		if _, err := l.Cleanup(ctx, 0); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		if l.Len() != len(m.backlog) {
			t.Fatalf("Len %d after Cleanup(0), model holds %d keys", l.Len(), len(m.backlog))
		}
	})
}
