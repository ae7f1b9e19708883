package algorithm_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
)

// benchStepKeys are 10k keys, as in the root package's benchmarks.
var benchStepKeys = func() []string {
	k := make([]string, 10_000)
	for i := range k {
		k[i] = fmt.Sprintf("user-%05d", i)
	}
	return k
}()

// benchSteps runs the shard's inner loop without the shard: look a key up,
// step its state, store it if it changed; the clock moves 100 ns per step
// (a key is checked every millisecond).
func benchSteps[S any](b *testing.B, alg algorithm.Algorithm[S]) {
	m := make(map[string]S, len(benchStepKeys))
	now := time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC).UnixNano()
	i, admitted := 0, 0
	step := func() {
		key := benchStepKeys[i%len(benchStepKeys)]
		i += 7
		now += 100
		st, ok := m[key]
		if !ok {
			st = alg.Fresh(now)
		}
		next, d, changed := alg.Step(st, now, 1)
		if changed {
			m[key] = next
		}
		if d.Allowed {
			admitted++
		}
	}
	// Half a second of clock first, so that every key is in its steady state
	// (past its first burst, its log as long as it gets) whatever b.N is.
	for range 5_000_000 {
		step()
	}
	admitted = 0
	b.ReportAllocs()
	cpu := benchCPUNanos()
	for b.Loop() {
		step()
	}
	if cpu > 0 {
		b.ReportMetric(float64(benchCPUNanos()-cpu)/float64(b.N), "cpu-ns/op")
	}
	b.ReportMetric(float64(admitted)/float64(b.N), "admitted/op")
}

// BenchmarkStepAlgorithms compares the algorithms' own cost per check,
// without the channel round trip, under the loads of the root package's
// BenchmarkCheckBatchAlgorithms ("admit": nothing denied; "saturated": 10
// at once then 100 per second, offered 1000 per second per key).
func BenchmarkStepAlgorithms(b *testing.B) {
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, load := range []string{"admit", "saturated"} {
		rate, burst, limit, logLimit, w, logW := 1e9, 1e6, int64(1<<31-1), int64(1<<16), time.Second, 10*time.Millisecond
		if load == "saturated" {
			rate, burst, limit, logLimit, w, logW = 100, 9, 10, 10, 100*time.Millisecond, 100*time.Millisecond
		}
		g, err := algorithm.NewGCRA(rate, burst)
		must(err)
		tb, err := algorithm.NewTokenBucket(rate, burst)
		must(err)
		q, err := algorithm.NewLeakyBucket(rate, burst)
		must(err)
		sl, err := algorithm.NewSlidingLog(logLimit, logW)
		must(err)
		sw, err := algorithm.NewSlidingWindow(limit, w)
		must(err)
		fw, err := algorithm.NewFixedWindow(limit, w)
		must(err)
		b.Run(load+"/gcra", func(b *testing.B) { benchSteps(b, algorithm.Algorithm[int64](g)) })
		b.Run(load+"/token-bucket", func(b *testing.B) { benchSteps(b, algorithm.Algorithm[algorithm.TokenState](tb)) })
		b.Run(load+"/leaky-bucket", func(b *testing.B) { benchSteps(b, algorithm.Algorithm[int64](q)) })
		b.Run(load+"/sliding-window-log", func(b *testing.B) { benchSteps(b, algorithm.Algorithm[[]int64](sl)) })
		b.Run(load+"/sliding-window", func(b *testing.B) { benchSteps(b, algorithm.Algorithm[algorithm.SlidingState](sw)) })
		b.Run(load+"/fixed-window", func(b *testing.B) { benchSteps(b, algorithm.Algorithm[algorithm.FixedState](fw)) })
	}
}
