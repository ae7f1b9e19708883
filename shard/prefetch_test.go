package shard

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
)

// newShardPrefetch starts a shard that prefetches for its batches from
// min keys on.
func newShardPrefetch(t *testing.T, clk clock.Clock, min int) *Shard[int64] {
	t.Helper()
	old := prefetchMinKeys
	prefetchMinKeys = min
	defer func() { prefetchMinKeys = old }()
	s := New(Config[int64]{Algorithm: gcra(t, 1000, 3), Clock: clk, SweepEvery: -1})
	t.Cleanup(s.Stop)
	return s
}

// TestPrefetchingBatchDecidesAlike runs the same random batches through a
// shard that always takes the prefetching path and one that never does:
// decisions, errors and key counts must agree, while the tables grow
// through many subtable splits in the middle of chunks (thousands of keys), keys
// repeat within a chunk, and costs include peeks and costs above the
// capacity.
func TestPrefetchingBatchDecidesAlike(t *testing.T) {
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	pre := newShardPrefetch(t, clk, 0)
	plain := newShardPrefetch(t, clk, math.MaxInt)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	run := func(s *Shard[int64], reqs []Request) *Batch {
		b := &Batch{Reqs: reqs, Out: make([]algorithm.Decision, len(reqs)), Done: make(chan *Batch, 1)}
		if err := s.SendBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
		return <-b.Done
	}
	for round := range 400 {
		reqs := make([]Request, 1+rng.IntN(100))
		for i := range reqs {
			k := rng.IntN(20_000)
			if rng.IntN(4) == 0 {
				k = rng.IntN(8) // hot keys, repeated within a chunk
			}
			c := rng.IntN(6) // capacity 4: 5 fails; 0 peeks
			reqs[i] = Request{Key: fmt.Sprintf("key-%d", k), Cost: c, Peek: c == 0}
		}
		a, b := run(pre, reqs), run(plain, reqs)
		if a.Err != nil || b.Err != nil {
			t.Fatalf("round %d: batch errors %v / %v", round, a.Err, b.Err)
		}
		for i := range reqs {
			var ea, eb error
			if a.Errs != nil {
				ea = a.Errs[i]
			}
			if b.Errs != nil {
				eb = b.Errs[i]
			}
			if a.Out[i] != b.Out[i] || fmt.Sprint(ea) != fmt.Sprint(eb) {
				t.Fatalf("round %d item %d %+v: prefetching %+v (%v), plain %+v (%v)", round, i, reqs[i], a.Out[i], ea, b.Out[i], eb)
			}
		}
		if pre.Len() != plain.Len() {
			t.Fatalf("round %d: %d keys held against %d", round, pre.Len(), plain.Len())
		}
		clk.Advance(time.Duration(rng.IntN(3)) * time.Millisecond)
	}
	if pre.Len() < 5_000 {
		t.Fatalf("only %d keys held: the tables did not grow as the test means them to", pre.Len())
	}
}

// TestPrefetchSpan runs the assembly over aligned and unaligned spans of
// every length up to a few lines, at the edges of an allocation: a hint
// must never fault.
func TestPrefetchSpan(t *testing.T) {
	buf := make([]byte, 512)
	base := uintptr(unsafe.Pointer(&buf[0]))
	for off := uintptr(0); off < 130; off++ {
		for n := uintptr(1); off+n <= uintptr(len(buf)); n += 1 + n/3 {
			prefetchSpan(base+off, n)
		}
		prefetch(base + off)
	}
	prefetch(0) // a hint for an unmapped address is ignored
	prefetchSpan(0, 64)
}
