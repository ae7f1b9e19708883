// Package bench holds Flux's side-by-side benchmarks against its peers:
// golang.org/x/time/rate for the in-process library (this file and
// memory.go) and gubernator for flux-node (package load and cmd/fluxload).
//
// The benchmark bodies are plain functions of *testing.B so that both
// `go test -bench` (bench_test.go) and cmd/ratecmp, which runs them
// interleaved and prints the ratios, use the same code.
package bench

import (
	"context"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bench/internal/keyseq"
)

// Keys is the number of distinct keys every core benchmark spreads its
// checks over.
const Keys = 10_000

// BatchSize is the number of requests per CheckBatch call.
const BatchSize = 64

// Limit is the limit every core benchmark uses: high enough that the
// checks are admitted, so each side does its full admit path. The x/time/rate
// side uses the same rate and capacity (burst+1).
var Limit = flux.Limit{Rate: 1e6, Burst: 1000}

// KeyNames returns n distinct keys, "user:0" to "user:<n-1>".
func KeyNames(n int) []string {
	return keyseq.Names("user:", n)
}

// XTimeRate measures golang.org/x/time/rate with one *rate.Limiter per key
// held in a sync.Map (the usual way to key it), Allow from parallel
// goroutines over Keys keys. It reports ns/key (= ns/op).
func XTimeRate(b *testing.B) {
	keys := KeyNames(Keys)
	var m sync.Map
	get := func(k string) *rate.Limiter {
		if v, ok := m.Load(k); ok {
			return v.(*rate.Limiter)
		}
		v, _ := m.LoadOrStore(k, rate.NewLimiter(rate.Limit(Limit.Rate), int(Limit.Burst)+1))
		return v.(*rate.Limiter)
	}
	for _, k := range keys {
		get(k)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := keyseq.NewSeq()
		for pb.Next() {
			get(keys[s.Next(Keys)]).Allow()
		}
	})
	b.StopTimer()
	reportPerKey(b, 1)
}

// FluxCheckBatch measures flux's CheckBatch with BatchSize requests per
// call from parallel goroutines over Keys keys. It reports ns/key.
func FluxCheckBatch(b *testing.B) {
	l, keys := newLimiter(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := keyseq.NewSeq()
		reqs := make([]flux.Request, BatchSize)
		out := make([]flux.Decision, BatchSize)
		for i := range reqs {
			reqs[i].Cost = 1
		}
		for pb.Next() {
			for i := range reqs {
				reqs[i].Key = keys[s.Next(Keys)]
			}
			if err := l.CheckBatch(ctx, reqs, out); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportPerKey(b, BatchSize)
}

// FluxCheck measures flux's Check (one channel round trip per check) from
// parallel goroutines over Keys keys. It reports ns/key (= ns/op).
func FluxCheck(b *testing.B) {
	l, keys := newLimiter(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := keyseq.NewSeq()
		for pb.Next() {
			if _, err := l.Check(ctx, keys[s.Next(Keys)]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportPerKey(b, 1)
}

// newLimiter returns a limiter holding Keys keys (each checked once) and
// the keys; the limiter is closed when the benchmark ends.
func newLimiter(b *testing.B) (*flux.Limiter, []string) {
	l, err := flux.New(Limit)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	keys := KeyNames(Keys)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reqs := make([]flux.Request, 0, BatchSize)
	out := make([]flux.Decision, BatchSize)
	for i, k := range keys {
		reqs = append(reqs, flux.Request{Key: k, Cost: 1})
		if len(reqs) == BatchSize || i == len(keys)-1 {
			if err := l.CheckBatch(ctx, reqs, out); err != nil {
				b.Fatal(err)
			}
			reqs = reqs[:0]
		}
	}
	return l, keys
}

func reportPerKey(b *testing.B, perOp int) {
	if b.N == 0 {
		return
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perOp), "ns/key")
}

// XTimeRateSerial is XTimeRate from one goroutine: no contention on the
// per-key mutexes, so it is less sensitive to a busy machine.
func XTimeRateSerial(b *testing.B) {
	keys := KeyNames(Keys)
	var m sync.Map
	for _, k := range keys {
		m.Store(k, rate.NewLimiter(rate.Limit(Limit.Rate), int(Limit.Burst)+1))
	}
	s := keyseq.NewSeq()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		v, _ := m.Load(keys[s.Next(Keys)])
		v.(*rate.Limiter).Allow()
	}
	reportPerKey(b, 1)
}

// FluxCheckBatchSerial is FluxCheckBatch from one caller (the shards
// still run in their own goroutines).
func FluxCheckBatchSerial(b *testing.B) {
	l, keys := newLimiter(b)
	ctx := context.Background()
	s := keyseq.NewSeq()
	reqs := make([]flux.Request, BatchSize)
	out := make([]flux.Decision, BatchSize)
	for i := range reqs {
		reqs[i].Cost = 1
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i := range reqs {
			reqs[i].Key = keys[s.Next(Keys)]
		}
		if err := l.CheckBatch(ctx, reqs, out); err != nil {
			b.Fatal(err)
		}
	}
	reportPerKey(b, BatchSize)
}
