package flux_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/fluxlimiter/flux"
)

// benchKeys are the 10k keys the core benchmarks spread their load over.
var benchKeys = func() []string {
	k := make([]string, 10_000)
	for i := range k {
		k[i] = fmt.Sprintf("user-%05d", i)
	}
	return k
}()

// benchLimit never denies, so every check does the full admit path.
var benchLimit = flux.Limit{Rate: 1e9, Burst: 1e6}

// benchLimiter returns a limiter with benchLimit, closed when b ends.
func benchLimiter(b *testing.B, opts ...flux.Option) *flux.Limiter {
	b.Helper()
	l, err := flux.New(benchLimit, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

// nextKeys fills reqs with cost-1 checks of the keys from benchKeys[i] on,
// in steps of 7, and returns where the next call continues.
func nextKeys(reqs []flux.Request, i int) int {
	for j := range reqs {
		reqs[j] = flux.Request{Key: benchKeys[i%len(benchKeys)], Cost: 1}
		i += 7
	}
	return i
}

// BenchmarkCheck: parallel callers, one key per check, over 10k keys.
func BenchmarkCheck(b *testing.B) {
	l := benchLimiter(b)
	ctx := context.Background()
	b.ReportAllocs()
	c0 := algCPUNanos()
	defer func() { b.ReportMetric(float64(algCPUNanos()-c0)/float64(b.N), "cpu-ns/op") }()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := l.Check(ctx, benchKeys[i%len(benchKeys)]); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}

// BenchmarkCheckBatch: 64 requests per call over 10k keys, one caller.
// ns/key is the figure to compare with per-check costs.
func BenchmarkCheckBatch(b *testing.B) {
	l := benchLimiter(b)
	ctx := context.Background()
	reqs := make([]flux.Request, 64)
	out := make([]flux.Decision, 64)
	i := 0
	b.ReportAllocs()
	c0 := algCPUNanos()
	for b.Loop() {
		i = nextKeys(reqs, i)
		if err := l.CheckBatch(ctx, reqs, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(reqs)), "ns/key")
	b.ReportMetric(float64(algCPUNanos()-c0)/float64(b.N*len(reqs)), "cpu-ns/key")
}

// BenchmarkCheckBatchParallel: the same with parallel callers, as a node
// serving many batch requests at once would call it.
func BenchmarkCheckBatchParallel(b *testing.B) {
	l := benchLimiter(b)
	b.ReportAllocs()
	parallelBatches(b, l)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/key")
}

// parallelBatches runs b.RunParallel callers that each check batches of 64
// requests built by nextKeys.
func parallelBatches(b *testing.B, l *flux.Limiter) {
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		reqs := make([]flux.Request, 64)
		out := make([]flux.Decision, 64)
		i := 0
		for pb.Next() {
			i = nextKeys(reqs, i)
			if err := l.CheckBatch(ctx, reqs, out); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkShards compares shard counts: one check per call (parallel
// callers), 64 per batch from one caller, and 64 per batch from parallel
// callers. CPU time per op is reported beside wall time because the
// machine the figures come from may be shared.
func BenchmarkShards(b *testing.B) {
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("check/shards=%d", n), func(b *testing.B) {
			l := benchLimiter(b, flux.WithShards(n))
			ctx := context.Background()
			c0 := algCPUNanos()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					l.Check(ctx, benchKeys[i%len(benchKeys)])
					i += 7
				}
			})
			b.ReportMetric(float64(algCPUNanos()-c0)/float64(b.N), "cpu-ns/op")
		})
		b.Run(fmt.Sprintf("batch/shards=%d", n), func(b *testing.B) {
			l := benchLimiter(b, flux.WithShards(n))
			ctx := context.Background()
			reqs := make([]flux.Request, 64)
			out := make([]flux.Decision, 64)
			i := 0
			c0 := algCPUNanos()
			for b.Loop() {
				i = nextKeys(reqs, i)
				l.CheckBatch(ctx, reqs, out)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/key")
			b.ReportMetric(float64(algCPUNanos()-c0)/float64(b.N*64), "cpu-ns/key")
		})
		b.Run(fmt.Sprintf("batch-parallel/shards=%d", n), func(b *testing.B) {
			l := benchLimiter(b, flux.WithShards(n))
			c0 := algCPUNanos()
			parallelBatches(b, l)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/key")
			b.ReportMetric(float64(algCPUNanos()-c0)/float64(b.N*64), "cpu-ns/key")
		})
	}
}

// BenchmarkCheckBatchSize splits a batch's cost into its fixed part (the
// round trip to the shard) and its part per key: one caller, one shard.
func BenchmarkCheckBatchSize(b *testing.B) {
	for _, n := range []int{1, 8, 64, 512} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			l := benchLimiter(b)
			ctx := context.Background()
			reqs := make([]flux.Request, n)
			out := make([]flux.Decision, n)
			i := 0
			for b.Loop() {
				i = nextKeys(reqs, i)
				if err := l.CheckBatch(ctx, reqs, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
		})
	}
}

// BenchmarkCheckBatchKeys is BenchmarkCheckBatch over 1k to 1M distinct
// keys, all held: what the number of active keys does to a check's cost,
// through the caches (the other core benchmarks use 10k).
func BenchmarkCheckBatchKeys(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 30_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			keys := make([]string, n)
			for i := range keys {
				keys[i] = fmt.Sprintf("user-%07d", i)
			}
			l := benchLimiter(b)
			ctx := context.Background()
			reqs := make([]flux.Request, 64)
			out := make([]flux.Decision, 64)
			fill := func(i int) int {
				for j := range reqs {
					reqs[j] = flux.Request{Key: keys[i%n], Cost: 1}
					i += 7 // 7 is prime to every n here: all keys in turn
				}
				return i
			}
			for i := 0; i < n; { // hold every key before timing
				i = fill(i)
				if err := l.CheckBatch(ctx, reqs, out); err != nil {
					b.Fatal(err)
				}
			}
			i := 0
			for b.Loop() {
				i = fill(i)
				if err := l.CheckBatch(ctx, reqs, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(reqs)), "ns/key")
		})
	}
}
