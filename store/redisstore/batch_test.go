package redisstore_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/internal/errs"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/redisstore"
)

// CheckGCRABatch decides every item exactly as algorithm.GCRA.Step does,
// in order, repeated keys included; bad items fail alone; a script lost by
// Redis is loaded again.
func TestCheckGCRABatch(t *testing.T) {
	s, rdb := newStore(t, redisstore.Options{})
	g, err := algorithm.NewGCRA(4, 3.5)
	if err != nil {
		t.Fatal(err)
	}
	tats := map[string]int64{}
	rng := rand.New(rand.NewPCG(5, 6))
	now := time.Unix(1_700_000_000, 0).UnixNano()
	for round := range 40 {
		if round == 20 {
			if err := rdb.ScriptFlush(t.Context()).Err(); err != nil {
				t.Fatal(err)
			}
		}
		now += int64(rng.IntN(600)) * int64(time.Millisecond)
		n := 1 + rng.IntN(30)
		keys, costs := make([]string, n), make([]int64, n)
		for i := range keys {
			keys[i], costs[i] = fmt.Sprint("k", rng.IntN(4)), int64(rng.IntN(4))
		}
		bad := -1
		if round%7 == 3 {
			bad = rng.IntN(n)
			costs[bad] = g.Capacity() + 1
		}
		out, ierrs := make([]algorithm.Decision, n), make([]error, n)
		if err := s.CheckGCRABatch(t.Context(), "l", g, now, keys, costs, out, ierrs); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for i := range keys {
			if i == bad {
				if !errors.Is(ierrs[i], errs.CostExceedsBurst) {
					t.Fatalf("round %d item %d: cost above capacity: %v", round, i, ierrs[i])
				}
				continue
			}
			tat, ok := tats[keys[i]]
			if !ok {
				tat = g.Fresh(now)
			}
			next, want, _ := g.Step(tat, now, costs[i])
			tats[keys[i]] = next
			if ierrs[i] != nil || out[i] != want {
				t.Fatalf("round %d item %d (%s cost %d): %+v %v; want %+v", round, i, keys[i], costs[i], out[i], ierrs[i], want)
			}
		}
	}
	// The batch and single checks share their records.
	d, err := s.CheckGCRA(t.Context(), "l", "k0", g, now, 0)
	if _, want, _ := g.Step(tats["k0"], now, 0); err != nil || d != want {
		t.Fatalf("CheckGCRA after batches: %+v %v; want %+v", d, err, want)
	}
	out, ierrs := make([]algorithm.Decision, 1), make([]error, 1)
	if err := s.CheckGCRABatch(t.Context(), "", g, now, []string{"k"}, []int64{1}, out, ierrs); !errors.Is(err, store.ErrInvalidKey) {
		t.Fatalf("empty limiter: %v", err)
	}
	s.Close()
	if err := s.CheckGCRABatch(t.Context(), "l", g, now, []string{"k"}, []int64{1}, out, ierrs); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
