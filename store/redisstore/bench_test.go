package redisstore_test

import (
	_ "embed"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/redisstore"
	"github.com/fluxlimiter/flux/store/storetest"
)

// benchKeys is how many distinct keys the spread benchmarks use.
const benchKeys = 1000

// BenchmarkSave: batches of 100 entries, one pipeline each.
func BenchmarkSave(b *testing.B) {
	s, _ := newStore(b, redisstore.Options{})
	keys := storetest.KeyNames(100)
	batch := make([]store.Entry, len(keys))
	idle := time.Now().Add(time.Hour).UnixNano()
	for i, k := range keys {
		batch[i] = store.Entry{Key: k, State: make([]byte, 8), IdleAt: idle}
	}
	for b.Loop() {
		if err := s.Save(b.Context(), "bench", batch); err != nil {
			b.Fatal(err)
		}
	}
	storetest.PerSecond(b, b.N*len(batch), "entries/s")
}

func preload(b *testing.B, s store.Store, keys []string) {
	idle := time.Now().Add(time.Hour).UnixNano()
	batch := make([]store.Entry, len(keys))
	for i, k := range keys {
		batch[i] = store.Entry{Key: k, State: make([]byte, 8), IdleAt: idle}
	}
	if err := s.Save(b.Context(), "bench", batch); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLoad: single loads from 64 goroutines.
func BenchmarkLoad(b *testing.B) {
	s, _ := newStore(b, redisstore.Options{})
	keys := storetest.KeyNames(benchKeys)
	preload(b, s, keys)
	b.SetParallelism(32) // × GOMAXPROCS goroutines
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

// BenchmarkLoadMany: batches of 100 keys, one pipeline each.
func BenchmarkLoadMany(b *testing.B) {
	s, _ := newStore(b, redisstore.Options{})
	keys := storetest.KeyNames(100)
	preload(b, s, keys)
	out, found := make([]store.Entry, len(keys)), make([]bool, len(keys))
	for b.Loop() {
		if err := s.LoadMany(b.Context(), "bench", keys, out, found); err != nil {
			b.Fatal(err)
		}
	}
	storetest.PerSecond(b, b.N*len(keys), "entries/s")
}

//go:embed testdata/baseline_gcra.lua
var baselineLua string

var baselineScript = redis.NewScript(baselineLua)

// baselineCheck calls the baseline script and parses its reply the way
// go-redis/redis_rate does.
func baselineCheck(b *testing.B, rdb *redis.Client, key string) bool {
	v, err := baselineScript.Run(b.Context(), rdb, []string{key}, 99, 1000, 1.0, 1).Slice()
	if err != nil {
		b.Error(err)
		return false
	}
	retry, err1 := strconv.ParseFloat(v[2].(string), 64)
	reset, err2 := strconv.ParseFloat(v[3].(string), 64)
	if err1 != nil || err2 != nil {
		b.Error(err1, err2)
	}
	_, _ = retry, reset
	return v[0].(int64) > 0
}

// BenchmarkGCRA compares the atomic mode with the baseline float script,
// same client, same pool (64 connections), same 64 goroutines, in one run:
// over 1000 keys ("spread") and on one key ("hot").
func BenchmarkGCRA(b *testing.B) {
	g, _ := algorithm.NewGCRA(1000, 99)
	for _, shape := range []struct {
		name string
		keys []string
	}{{"spread", storetest.KeyNames(benchKeys)}, {"hot", []string{"hot"}}} {
		b.Run("flux/"+shape.name, func(b *testing.B) {
			s, _ := newStore(b, redisstore.Options{})
			runChecks(b, shape.keys, func(key string) bool {
				d, err := s.CheckGCRA(b.Context(), "bench", key, g, time.Now().UnixNano(), 1)
				if err != nil {
					b.Error(err)
				}
				return d.Allowed
			})
		})
		b.Run("flux-servertime/"+shape.name, func(b *testing.B) {
			s, _ := newStore(b, redisstore.Options{ServerTime: true})
			runChecks(b, shape.keys, func(key string) bool {
				d, err := s.CheckGCRA(b.Context(), "bench", key, g, 0, 1)
				if err != nil {
					b.Error(err)
				}
				return d.Allowed
			})
		})
		b.Run("baseline/"+shape.name, func(b *testing.B) {
			rdb := newClient(b)
			pre := prefix(b, rdb)
			runChecks(b, shape.keys, func(key string) bool { return baselineCheck(b, rdb, pre+key) })
		})
	}
}

func runChecks(b *testing.B, keys []string, check func(key string) bool) {
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 2))
		for pb.Next() {
			check(keys[r.IntN(len(keys))])
		}
	})
	storetest.PerSecond(b, b.N, "checks/s")
}

// BenchmarkGCRAPaired alternates a flux check and a baseline check in
// every goroutine (64 goroutines, one client, 64 connections), so that both
// see the same load at the same moments even on a busy machine, and reports
// each one's mean latency and their ratio.
func BenchmarkGCRAPaired(b *testing.B) {
	g, _ := algorithm.NewGCRA(1000, 99)
	for _, shape := range []struct {
		name string
		keys []string
	}{{"spread", storetest.KeyNames(benchKeys)}, {"hot", []string{"hot"}}} {
		b.Run(shape.name, func(b *testing.B) {
			s, rdb := newStore(b, redisstore.Options{})
			pre := prefix(b, rdb)
			var fluxNs, baseNs, calls atomic.Int64
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 3))
				var f, bl, n int64
				for pb.Next() {
					key := shape.keys[r.IntN(len(shape.keys))]
					t0 := time.Now()
					if _, err := s.CheckGCRA(b.Context(), "bench", key, g, t0.UnixNano(), 1); err != nil {
						b.Error(err)
						return
					}
					t1 := time.Now()
					baselineCheck(b, rdb, pre+key)
					t2 := time.Now()
					f, bl, n = f+int64(t1.Sub(t0)), bl+int64(t2.Sub(t1)), n+1
				}
				fluxNs.Add(f)
				baseNs.Add(bl)
				calls.Add(n)
			})
			n := float64(calls.Load())
			b.ReportMetric(float64(fluxNs.Load())/n, "flux-ns/check")
			b.ReportMetric(float64(baseNs.Load())/n, "baseline-ns/check")
			b.ReportMetric(float64(fluxNs.Load())/float64(baseNs.Load()), "flux/baseline")
		})
	}
}
