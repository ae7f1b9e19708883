package pgstore_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/pgstore"
	"github.com/fluxlimiter/flux/store/storetest"
)

// BenchmarkSave: batches of 100 entries, one upsert statement each.
func BenchmarkSave(b *testing.B) {
	s := newStore(b, nil, pgstore.Options{})
	batch := storetest.Entries(storetest.KeyNames(100))
	for b.Loop() {
		if err := s.Save(b.Context(), "bench", batch); err != nil {
			b.Fatal(err)
		}
	}
	storetest.PerSecond(b, b.N*len(batch), "entries/s")
}

// BenchmarkLoad: single loads from 16 goroutines over 16 connections.
func BenchmarkLoad(b *testing.B) {
	s := newStore(b, nil, pgstore.Options{})
	keys := storetest.KeyNames(1000)
	if err := s.Save(b.Context(), "bench", storetest.Entries(keys)); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(8)
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

// BenchmarkLoadMany: batches of 100 keys, one query each.
func BenchmarkLoadMany(b *testing.B) {
	s := newStore(b, nil, pgstore.Options{})
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

// BenchmarkCheckGCRA: the atomic mode from 16 goroutines over 16
// connections, over 1000 keys ("spread") and on one key ("hot").
func BenchmarkCheckGCRA(b *testing.B) {
	g, _ := algorithm.NewGCRA(1000, 99)
	for _, shape := range []struct {
		name string
		keys []string
	}{{"spread", storetest.KeyNames(1000)}, {"hot", []string{"hot"}}} {
		for _, st := range []bool{false, true} {
			name := shape.name
			if st {
				name = "servertime/" + name
			}
			b.Run(name, func(b *testing.B) {
				s := newStore(b, nil, pgstore.Options{ServerTime: st})
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					r := rand.New(rand.NewPCG(rand.Uint64(), 2))
					for pb.Next() {
						_, err := s.CheckGCRA(b.Context(), "bench", shape.keys[r.IntN(len(shape.keys))], g, time.Now().UnixNano(), 1)
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
				storetest.PerSecond(b, b.N, "checks/s")
			})
		}
	}
}
