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

// BenchmarkCheck: parallel callers, one key per check, over 10k keys.
func BenchmarkCheck(b *testing.B) {
	l, err := flux.New(benchLimit)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	b.ReportAllocs()
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
	l, err := flux.New(benchLimit)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	reqs := make([]flux.Request, 64)
	out := make([]flux.Decision, 64)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		for j := range reqs {
			reqs[j] = flux.Request{Key: benchKeys[i%len(benchKeys)], Cost: 1}
			i += 7
		}
		if err := l.CheckBatch(ctx, reqs, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(reqs)), "ns/key")
}

// BenchmarkCheckBatchParallel: the same with parallel callers, as a node
// serving many batch requests at once would call it.
func BenchmarkCheckBatchParallel(b *testing.B) {
	l, err := flux.New(benchLimit)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		reqs := make([]flux.Request, 64)
		out := make([]flux.Decision, 64)
		i := 0
		for pb.Next() {
			for j := range reqs {
				reqs[j] = flux.Request{Key: benchKeys[i%len(benchKeys)], Cost: 1}
				i += 7
			}
			if err := l.CheckBatch(ctx, reqs, out); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/key")
}
