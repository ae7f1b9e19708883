package flux_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
)

// algBenchCases are the algorithms side by side under two loads, both
// BenchmarkCheckBatch's (64 requests per call over 10k keys, one caller,
// the system clock):
//
//   - admit: limits so high that every check is admitted, so every check
//     runs the full admit path (for GCRA, the same limit as benchLimit).
//     The sliding log's window is 10 ms there, which keeps its logs at a
//     few dozen entries per key at the rate this load reaches each key.
//   - saturated: "10 at once, then 100 per second" in every algorithm's
//     terms (10 per 100 ms for the windows). Each key is offered thousands
//     of checks per second, so most checks are denied, and the sliding log
//     holds 10 entries for each of the 10k keys.
var algBenchCases = []struct {
	load string
	lim  flux.Limit
}{
	{"admit", flux.Limit{Algorithm: flux.GCRA, Rate: 1e9, Burst: 1e6}},
	{"admit", flux.Limit{Algorithm: flux.TokenBucket, Rate: 1e9, Burst: 1e6}},
	{"admit", flux.Limit{Algorithm: flux.LeakyBucket, Rate: 1e9, Burst: 1e6}},
	{"admit", flux.Limit{Algorithm: flux.SlidingWindowLog, Requests: 1 << 16, Window: 10 * time.Millisecond}},
	{"admit", flux.Limit{Algorithm: flux.SlidingWindow, Requests: 1<<31 - 1, Window: time.Second}},
	{"admit", flux.Limit{Algorithm: flux.FixedWindow, Requests: 1<<31 - 1, Window: time.Second}},
	{"saturated", flux.Limit{Algorithm: flux.GCRA, Rate: 100, Burst: 9}},
	{"saturated", flux.Limit{Algorithm: flux.TokenBucket, Rate: 100, Burst: 9}},
	{"saturated", flux.Limit{Algorithm: flux.LeakyBucket, Rate: 100, Burst: 9}},
	{"saturated", flux.Limit{Algorithm: flux.SlidingWindowLog, Requests: 10, Window: 100 * time.Millisecond}},
	{"saturated", flux.Limit{Algorithm: flux.SlidingWindow, Requests: 10, Window: 100 * time.Millisecond}},
	{"saturated", flux.Limit{Algorithm: flux.FixedWindow, Requests: 10, Window: 100 * time.Millisecond}},
}

// BenchmarkCheckBatchAlgorithms is BenchmarkCheckBatch for every algorithm
// in one run: ns/key is the figure to compare with GCRA's.
func BenchmarkCheckBatchAlgorithms(b *testing.B) {
	for _, c := range algBenchCases {
		b.Run(c.load+"/"+string(c.lim.Algorithm), func(b *testing.B) {
			l, err := flux.New(c.lim)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			ctx := b.Context()
			reqs := make([]flux.Request, 64)
			out := make([]flux.Decision, 64)
			i, admitted := 0, 0
			batch := func() {
				for j := range reqs {
					reqs[j] = flux.Request{Key: benchKeys[i%len(benchKeys)], Cost: 1}
					i += 7
				}
				if err := l.CheckBatch(ctx, reqs, out); err != nil {
					b.Fatal(err)
				}
				for j := range out {
					if out[j].Allowed {
						admitted++
					}
				}
			}
			// Every key checked 100 times first: past its first burst,
			// whatever b.N is.
			for range 100 * len(benchKeys) / len(reqs) {
				batch()
			}
			admitted = 0
			b.ReportAllocs()
			cpu := algCPUNanos()
			for b.Loop() {
				batch()
			}
			if cpu > 0 {
				// CPU time of the caller and the shards together, per key.
				b.ReportMetric(float64(algCPUNanos()-cpu)/float64(b.N*len(reqs)), "cpu-ns/key")
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(reqs)), "ns/key")
			b.ReportMetric(float64(admitted)/float64(b.N*len(reqs)), "admitted/key")
		})
	}
}

// BenchmarkMemoryPerKeyAlgorithms reports the heap each algorithm holds per
// key (B/key) after 100k keys were admitted once each, key bytes included
// (10-byte keys): map slot, state, and for the sliding log its entries.
func BenchmarkMemoryPerKeyAlgorithms(b *testing.B) {
	const n = 100_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("mem-%06d", i)
	}
	for _, c := range algBenchCases[6:] { // the "saturated" limits
		b.Run(string(c.lim.Algorithm), func(b *testing.B) {
			var perKey float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				l, err := flux.New(c.lim, flux.WithSweep(-1, 1))
				if err != nil {
					b.Fatal(err)
				}
				reqs := make([]flux.Request, 1000)
				out := make([]flux.Decision, len(reqs))
				for i := 0; i < n; i += len(reqs) {
					for j := range reqs {
						reqs[j] = flux.Request{Key: keys[i+j], Cost: 1}
					}
					if err := l.CheckBatch(b.Context(), reqs, out); err != nil {
						b.Fatal(err)
					}
				}
				reqs, out = nil, nil
				runtime.GC()
				runtime.ReadMemStats(&after)
				if l.Len() != n {
					b.Fatalf("%d keys held, want %d", l.Len(), n)
				}
				perKey = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
				l.Close()
			}
			b.ReportMetric(perKey, "B/key")
		})
	}
}
