package flux_test

import (
	"errors"
	"testing"

	"github.com/fluxlimiter/flux"
)

// A Request whose Cost is left unset is a check of cost 1, as a missing
// "cost" is on the wire: a forgotten field must never turn a batch of
// checks into peeks that limit nothing.
func TestBatchZeroCostCountsOne(t *testing.T) {
	for _, shards := range []int{1, 4} {
		l, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 2}, flux.WithShards(shards)) // capacity 3
		reqs := make([]flux.Request, 4)
		for i := range reqs {
			reqs[i] = flux.Request{Key: "k"}
		}
		out := make([]flux.Decision, len(reqs))
		if err := l.CheckBatch(t.Context(), reqs, out); err != nil {
			t.Fatal(err)
		}
		for i, d := range out[:3] {
			if !d.Allowed || d.Remaining != 2-i {
				t.Errorf("%d shards, item %d: %+v; want allowed, %d remaining", shards, i, d, 2-i)
			}
		}
		if out[3].Allowed {
			t.Errorf("%d shards: the 4th unset-cost request on a capacity-3 limit was allowed: %+v", shards, out[3])
		}
		// The async batch reads Request the same way.
		ds, err := l.CheckBatchAsync(t.Context(), []flux.Request{{Key: "k2"}, {Key: "k2"}, {Key: "k2"}, {Key: "k2"}}).Wait(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !ds[2].Allowed || ds[3].Allowed {
			t.Errorf("%d shards, async: %+v", shards, ds)
		}
	}
}

// Peeking inside a batch is spelled out with Peek; CheckN(ctx, key, 0) and
// Peek keep peeking.
func TestBatchPeekIsExplicit(t *testing.T) {
	l, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 2})
	out := make([]flux.Decision, 3)
	reqs := []flux.Request{{Key: "k", Cost: 2}, {Key: "k", Peek: true}, {Key: "k", Peek: true}}
	if err := l.CheckBatch(t.Context(), reqs, out); err != nil {
		t.Fatal(err)
	}
	if !out[1].Allowed || out[1].Remaining != 1 || out[2] != out[1] {
		t.Fatalf("peeks after a cost-2 check: %+v %+v; want allowed with 1 remaining, and equal", out[1], out[2])
	}
	if d := check(t, l, "k", 0); d != out[1] {
		t.Fatalf("CheckN(0) = %+v; want the peek %+v", d, out[1])
	}
	if d, err := l.Peek(t.Context(), "k"); err != nil || d != out[1] {
		t.Fatalf("Peek = %+v, %v; want %+v", d, err, out[1])
	}
	// A peek that names a cost is contradictory: rejected, nothing applied.
	var be *flux.BatchError
	err := l.CheckBatch(t.Context(), []flux.Request{{Key: "k"}, {Key: "k", Cost: 1, Peek: true}}, out)
	if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, flux.ErrInvalidCost) {
		t.Fatalf("Peek with Cost 1: %v; want a *BatchError at 1 wrapping ErrInvalidCost", err)
	}
	if d := check(t, l, "k", 0); d.Remaining != 1 {
		t.Fatalf("after the rejected batch: %+v; want 1 remaining (nothing applied)", d)
	}
}
