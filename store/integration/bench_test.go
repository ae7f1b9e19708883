package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/internal/storeenv"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/pgstore"
)

// Benchmarks of flux.Limiter over the real backends, run as
//
//	go test -run '^$' -bench . -count 6 ./store/integration | tee limiter.txt
//	benchstat limiter.txt
//
// Every benchmark reports checks/s (wall time) and cpu-ns/check: the CPU
// time this process used per check (user + system, from getrusage), which
// other work on a shared machine disturbs far less than wall time. The
// store server's own CPU is not in it, except for Redis, whose used CPU
// (INFO cpu) is reported as redis-cpu-ns/check.

const benchKeys = 10_000

func benchKeyNames() []string {
	ks := make([]string, benchKeys)
	for i := range ks {
		ks[i] = fmt.Sprintf("user-%06d", i)
	}
	return ks
}

// benchBackends returns the reachable backends (a benchmark cannot skip
// a whole run for one missing server, so it leaves that one out).
func benchBackends(b *testing.B) []backend {
	bs := []backend{natsBackend(b)}
	for _, f := range []func(testing.TB) (backend, bool){redisBackend, postgresBackend} {
		if bk, ok := f(b); ok {
			bs = append(bs, bk)
		}
	}
	return bs
}

// run measures checks issued by 32 goroutines per CPU, each picking random
// keys among benchKeys; rdb, if set, is a Redis whose CPU is measured too.
func run(b *testing.B, rdb *redis.Client, check func(ctx context.Context, key string) error) {
	keys := benchKeyNames()
	var redisCPU0 float64
	if rdb != nil {
		redisCPU0 = redisCPU(b, rdb)
	}
	cpu0 := cpuNanos()
	b.ResetTimer()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 1))
		ctx := context.Background()
		for pb.Next() {
			if err := check(ctx, keys[r.IntN(len(keys))]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
	b.ReportMetric(float64(cpuNanos()-cpu0)/float64(b.N), "cpu-ns/check")
	if rdb != nil {
		b.ReportMetric((redisCPU(b, rdb)-redisCPU0)*1e9/float64(b.N), "redis-cpu-ns/check")
	}
}

// redisCPU returns the seconds of CPU the Redis server has used.
func redisCPU(b *testing.B, rdb *redis.Client) float64 {
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return total
}

func redisAdmin(b *testing.B) *redis.Client {
	opts, err := redis.ParseURL(os.Getenv(storeenv.Redis))
	if err != nil {
		b.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	b.Cleanup(func() { rdb.Close() })
	return rdb
}

// BenchmarkWrite: single checks through WithStore, write-behind (100 ms)
// and write-through, per backend; "memory" is the limiter without a store.
// The limit (10/s with a burst of a million) admits every check and
// changes the key's state, and keeps every key busy (never idle, so never
// swept and loaded again): write-behind saves each of the 10 000 keys
// every 100 ms, write-through saves before answering every check (the
// shard groups the saves of the checks that arrive while one is in
// flight). Keys are loaded before the clock starts.
func BenchmarkWrite(b *testing.B) {
	lim := flux.Limit{Rate: 10, Burst: 1e6}
	b.Run("memory", func(b *testing.B) {
		l, err := flux.New(lim)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		run(b, nil, func(ctx context.Context, key string) error { _, err := l.Check(ctx, key); return err })
	})
	for _, bk := range benchBackends(b) {
		for _, write := range []string{"behind", "through"} {
			b.Run(bk.name+"/"+write, func(b *testing.B) {
				st := bk.open(b, "", clock.NewSystem())
				l, err := flux.New(lim, flux.WithStore(flux.StoreConfig{
					Store: st, Limiter: "bench-" + write, Mode: writeMode(write == "through"), Timeout: 5 * time.Second,
				}))
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				warm(b, l)
				var rdb *redis.Client
				if bk.name == "redis" {
					rdb = redisAdmin(b)
				}
				run(b, rdb, func(ctx context.Context, key string) error { _, err := l.Check(ctx, key); return err })
				if s := storeTotals(l); s.LoadErrors+s.SaveErrors+s.Fallbacks > 0 {
					b.Fatalf("store failures during the benchmark: %+v", s)
				}
			})
		}
	}
}

// warm loads every key, so the benchmark measures decisions, not loads.
func warm(b *testing.B, l *flux.Limiter) {
	keys := benchKeyNames()
	reqs := make([]flux.Request, 0, 1000)
	out := make([]flux.Decision, 1000)
	for lo := 0; lo < len(keys); lo += 1000 {
		reqs = reqs[:0]
		for _, k := range keys[lo:min(lo+1000, len(keys))] {
			reqs = append(reqs, flux.Request{Key: k, Cost: 1})
		}
		if err := l.CheckBatch(b.Context(), reqs, out); err != nil {
			b.Fatal(err)
		}
	}
}

var baselineScript = redis.NewScript(mustRead("../redisstore/testdata/baseline_gcra.lua"))

func mustRead(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(data)
}

// baselineCheck is the plain float GCRA script of the redis-gcra /
// go-redis/redis_rate design (store/redisstore/testdata/baseline_gcra.lua),
// called from go-redis and its reply parsed the way redis_rate does.
func baselineCheck(ctx context.Context, rdb *redis.Client, key string) error {
	v, err := baselineScript.Run(ctx, rdb, []string{key}, 99, 1000, 1.0, 1).Slice()
	if err != nil {
		return err
	}
	if _, err := strconv.ParseFloat(v[2].(string), 64); err != nil {
		return err
	}
	_, err = strconv.ParseFloat(v[3].(string), 64)
	return err
}

// BenchmarkAtomic: single checks of a limiter in atomic mode (every check
// decided in the store) against the plain Redis GCRA script called from
// go-redis, in the same run, with the same pool size (64) and the same 64
// goroutines; and the PostgreSQL atomic mode, with synchronous_commit on
// (the default: every admission waits for a WAL flush) and off. The limit
// is 1000/s with a burst of 99 per key, over 10 000 keys.
func BenchmarkAtomic(b *testing.B) {
	lim := flux.Limit{Rate: 1000, Burst: 99}
	atomicLimiter := func(b *testing.B, st store.Store) *flux.Limiter {
		l, err := flux.New(lim, flux.WithStore(flux.StoreConfig{
			Store: st, Limiter: "bench", Mode: flux.StoreAtomic, Timeout: 5 * time.Second,
		}))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if s := storeTotals(l); s.LoadErrors+s.Fallbacks > 0 {
				b.Errorf("store failures during the benchmark: %+v", s)
			}
			l.Close()
		})
		return l
	}
	if bk, ok := redisBackend(b); ok {
		b.Run("redis/flux", func(b *testing.B) {
			l := atomicLimiter(b, bk.open(b, "", nil))
			run(b, redisAdmin(b), func(ctx context.Context, key string) error { _, err := l.Check(ctx, key); return err })
		})
		b.Run("redis/plain-script", func(b *testing.B) {
			rdb := redisAdmin(b)
			o := rdb.Options()
			o.PoolSize = 64
			client := redis.NewClient(o)
			defer client.Close()
			pre := "fluxtest:" + storeenv.Suffix() + ":"
			defer cleanPrefix(rdb, pre)
			run(b, rdb, func(ctx context.Context, key string) error { return baselineCheck(ctx, client, pre+key) })
		})
		b.Run("redis/paired", func(b *testing.B) {
			l := atomicLimiter(b, bk.open(b, "", nil))
			rdb := redisAdmin(b)
			o := rdb.Options()
			o.PoolSize = 64
			client := redis.NewClient(o)
			defer client.Close()
			pre := "fluxtest:" + storeenv.Suffix() + ":"
			defer cleanPrefix(rdb, pre)
			runPaired(b, func(ctx context.Context, key string) error { _, err := l.Check(ctx, key); return err },
				func(ctx context.Context, key string) error { return baselineCheck(ctx, client, pre+key) })
		})
		b.Run("redis/flux-batch100", func(b *testing.B) {
			l := atomicLimiter(b, bk.open(b, "", nil))
			runBatches(b, l, 100)
		})
	}
	if bk, ok := postgresBackend(b); ok {
		b.Run("postgres/flux", func(b *testing.B) {
			l := atomicLimiter(b, bk.open(b, "", nil))
			run(b, nil, func(ctx context.Context, key string) error { _, err := l.Check(ctx, key); return err })
		})
		b.Run("postgres/flux-async-commit", func(b *testing.B) {
			l := atomicLimiter(b, asyncCommitStore(b))
			run(b, nil, func(ctx context.Context, key string) error { _, err := l.Check(ctx, key); return err })
		})
	}
}

// runBatches measures CheckBatch of n random keys from 8 goroutines per
// CPU; checks/s counts items.
func runBatches(b *testing.B, l *flux.Limiter, n int) {
	keys := benchKeyNames()
	cpu0 := cpuNanos()
	var items atomic.Int64
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 2))
		reqs := make([]flux.Request, n)
		out := make([]flux.Decision, n)
		for pb.Next() {
			for i := range reqs {
				reqs[i] = flux.Request{Key: keys[r.IntN(len(keys))], Cost: 1}
			}
			if err := l.CheckBatch(context.Background(), reqs, out); err != nil {
				b.Error(err)
				return
			}
			items.Add(int64(n))
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(items.Load())/b.Elapsed().Seconds(), "checks/s")
	b.ReportMetric(float64(cpuNanos()-cpu0)/float64(items.Load()), "cpu-ns/check")
}

func cleanPrefix(rdb *redis.Client, pre string) {
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, pre+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	for lo := 0; lo < len(keys); lo += 1000 {
		rdb.Del(ctx, keys[lo:min(lo+1000, len(keys))]...)
	}
}

// asyncCommitStore is a PostgreSQL store in a schema of its own whose
// connections run with synchronous_commit = off.
func asyncCommitStore(b *testing.B) store.Store {
	cfg, err := pgxpool.ParseConfig(os.Getenv(storeenv.Postgres))
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 16
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	pool, err := pgxpool.NewWithConfig(b.Context(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	schema := "fluxtest_" + storeenv.Suffix()
	s, err := pgstore.New(b.Context(), pool, pgstore.Options{Schema: schema, CleanupInterval: -1})
	if err != nil {
		pool.Close()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		s.Close()
		pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		pool.Close()
	})
	return s
}

// runPaired alternates a check by flux and one by the plain script in each
// of 64 goroutines, so that both meet the same load at the same moments on
// a busy machine, and reports each one's mean latency and their ratio.
func runPaired(b *testing.B, flux, plain func(ctx context.Context, key string) error) {
	keys := benchKeyNames()
	var fluxNs, plainNs, calls atomic.Int64
	b.ResetTimer()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 3))
		ctx := context.Background()
		var f, p, n int64
		for pb.Next() {
			key := keys[r.IntN(len(keys))]
			t0 := time.Now()
			if err := flux(ctx, key); err != nil {
				b.Error(err)
				return
			}
			t1 := time.Now()
			if err := plain(ctx, key); err != nil {
				b.Error(err)
				return
			}
			t2 := time.Now()
			f, p, n = f+int64(t1.Sub(t0)), p+int64(t2.Sub(t1)), n+1
		}
		fluxNs.Add(f)
		plainNs.Add(p)
		calls.Add(n)
	})
	n := float64(calls.Load())
	b.ReportMetric(float64(fluxNs.Load())/n, "flux-ns/check")
	b.ReportMetric(float64(plainNs.Load())/n, "plain-ns/check")
	b.ReportMetric(float64(fluxNs.Load())/float64(plainNs.Load()), "flux/plain")
}
