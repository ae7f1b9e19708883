package natskv_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/natskv"
	"github.com/fluxlimiter/flux/store/storetest"
)

func benchStore(b *testing.B) *natskv.Store {
	js, _ := connect(b, runServer(b))
	return newStore(b, js, natskv.Options{})
}

// BenchmarkSave: batches of 100 entries, published asynchronously.
func BenchmarkSave(b *testing.B) {
	s := benchStore(b)
	batch := storetest.Entries(storetest.KeyNames(100))
	for b.Loop() {
		if err := s.Save(b.Context(), "bench", batch); err != nil {
			b.Fatal(err)
		}
	}
	storetest.PerSecond(b, b.N*len(batch), "entries/s")
}

// BenchmarkLoad: single direct gets from 64 goroutines.
func BenchmarkLoad(b *testing.B) {
	s := benchStore(b)
	keys := storetest.KeyNames(1000)
	if err := s.Save(b.Context(), "bench", storetest.Entries(keys)); err != nil {
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
	storetest.PerSecond(b, b.N, "loads/s")
}

// BenchmarkLoadMany: batches of 100 keys, concurrent direct gets.
func BenchmarkLoadMany(b *testing.B) {
	s := benchStore(b)
	keys := storetest.KeyNames(100)
	if err := s.Save(b.Context(), "bench", storetest.Entries(keys)); err != nil {
		b.Fatal(err)
	}
	out, found := make([]store.Entry, len(keys)), make([]bool, len(keys))
	for b.Loop() {
		if err := s.LoadMany(b.Context(), "bench", keys, out, found); err != nil {
			b.Fatal(err)
		}
	}
	storetest.PerSecond(b, b.N*len(keys), "entries/s")
}

// BenchmarkCheckGCRA: the compare-and-set GCRA from 64 goroutines over
// 1000 keys.
func BenchmarkCheckGCRA(b *testing.B) {
	s := benchStore(b)
	g, _ := algorithm.NewGCRA(1000, 99)
	keys := storetest.KeyNames(1000)
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
	storetest.PerSecond(b, b.N, "checks/s")
}
