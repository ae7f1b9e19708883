package natskv_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/natskv"
)

func keyNames(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("user-%06d", i)
	}
	return ks
}

func perSecond(b *testing.B, n int, unit string) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), unit)
}

func entries(keys []string) []store.Entry {
	idle := time.Now().Add(time.Hour).UnixNano()
	es := make([]store.Entry, len(keys))
	for i, k := range keys {
		es[i] = store.Entry{Key: k, State: make([]byte, 8), IdleAt: idle}
	}
	return es
}

func benchStore(b *testing.B) *natskv.Store {
	js, _ := connect(b, runServer(b))
	return newStore(b, js, natskv.Options{})
}

// BenchmarkSave: batches of 100 entries, published asynchronously.
func BenchmarkSave(b *testing.B) {
	s := benchStore(b)
	batch := entries(keyNames(100))
	for b.Loop() {
		if err := s.Save(b.Context(), "bench", batch); err != nil {
			b.Fatal(err)
		}
	}
	perSecond(b, b.N*len(batch), "entries/s")
}

// BenchmarkLoad: single direct gets from 64 goroutines.
func BenchmarkLoad(b *testing.B) {
	s := benchStore(b)
	keys := keyNames(1000)
	if err := s.Save(b.Context(), "bench", entries(keys)); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			if _, ok, err := s.Load(b.Context(), "bench", keys[r.IntN(len(keys))]); err != nil || !ok {
				b.Error(ok, err)
				return
			}
		}
	})
	perSecond(b, b.N, "loads/s")
}

// BenchmarkLoadMany: batches of 100 keys, concurrent direct gets.
func BenchmarkLoadMany(b *testing.B) {
	s := benchStore(b)
	keys := keyNames(100)
	if err := s.Save(b.Context(), "bench", entries(keys)); err != nil {
		b.Fatal(err)
	}
	out, found := make([]store.Entry, len(keys)), make([]bool, len(keys))
	for b.Loop() {
		if err := s.LoadMany(b.Context(), "bench", keys, out, found); err != nil {
			b.Fatal(err)
		}
	}
	perSecond(b, b.N*len(keys), "entries/s")
}

// BenchmarkCheckGCRA: the compare-and-set GCRA from 64 goroutines over
// 1000 keys.
func BenchmarkCheckGCRA(b *testing.B) {
	s := benchStore(b)
	g, _ := algorithm.NewGCRA(1000, 99)
	keys := keyNames(1000)
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 2))
		for pb.Next() {
			if _, err := s.CheckGCRA(b.Context(), "bench", keys[r.IntN(len(keys))], g, time.Now().UnixNano(), 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
	perSecond(b, b.N, "checks/s")
}
