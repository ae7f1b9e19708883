package bench_test

import (
	"testing"

	"github.com/fluxlimiter/flux/bench"
)

// BenchmarkRate runs x/time/rate and flux side by side over the same keys,
// from parallel goroutines and then from one; compare the ns/key column
// (cmd/ratecmp prints the ratios).
func BenchmarkRate(b *testing.B) {
	b.Run("xtime=sync.Map", bench.XTimeRate)
	b.Run("flux=CheckBatch64", bench.FluxCheckBatch)
	b.Run("flux=Check", bench.FluxCheck)
	b.Run("xtime=sync.Map/serial", bench.XTimeRateSerial)
	b.Run("flux=CheckBatch64/serial", bench.FluxCheckBatchSerial)
}

// BenchmarkIdleKeyMemory reports the bytes per idle key a limiter holding
// one million keys uses beyond the keys' own bytes (run it with
// -benchtime=1x: each iteration fills a fresh limiter).
func BenchmarkIdleKeyMemory(b *testing.B) {
	var r bench.MemoryResult
	for b.Loop() {
		var err error
		if r, err = bench.IdleKeyMemory(1_000_000); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(r.BytesPerKey, "B/key")
	b.ReportMetric(float64(r.HeapDelta)/(1<<20), "MiB")
}

// BenchmarkAnchors runs the machine anchors of DESIGN.md section 8 (see
// bench.Anchors); cmd/ratecmp prints them beside the design's values.
func BenchmarkAnchors(b *testing.B) {
	for _, a := range bench.Anchors {
		b.Run(a.Name, a.Fn)
	}
}
