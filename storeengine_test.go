package flux_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/memstore"
)

func atomicLimiter(t *testing.T, clk clock.Clock, st store.AtomicGCRA, lim flux.Limit, cfg flux.AtomicStoreConfig) *flux.Limiter {
	t.Helper()
	cfg.Store = st
	if cfg.Limiter == "" {
		cfg.Limiter = "api"
	}
	l, err := flux.New(lim, flux.WithClock(clk), flux.WithAtomicStore(cfg), flux.WithShards(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestAtomicStoreOptions(t *testing.T) {
	st := memstore.New(memstore.Options{})
	for _, tc := range []struct {
		name string
		lim  flux.Limit
		opts []flux.Option
		want error
	}{
		{"no store", flux.Limit{Rate: 1}, []flux.Option{flux.WithAtomicStore(flux.AtomicStoreConfig{Limiter: "a"})}, flux.ErrInvalidOption},
		{"no name", flux.Limit{Rate: 1}, []flux.Option{flux.WithAtomicStore(flux.AtomicStoreConfig{Store: st})}, flux.ErrInvalidOption},
		{"negative timeout", flux.Limit{Rate: 1}, []flux.Option{flux.WithAtomicStore(flux.AtomicStoreConfig{Store: st, Limiter: "a", Timeout: -1})}, flux.ErrInvalidOption},
		{"bad policy", flux.Limit{Rate: 1}, []flux.Option{flux.WithAtomicStore(flux.AtomicStoreConfig{Store: st, Limiter: "a", OnFailure: 9})}, flux.ErrInvalidOption},
		{"token bucket", flux.Limit{Algorithm: flux.TokenBucket, Rate: 1}, []flux.Option{flux.WithAtomicStore(flux.AtomicStoreConfig{Store: st, Limiter: "a"})}, flux.ErrInvalidOption},
		{"fixed window", flux.Limit{Algorithm: flux.FixedWindow, Limit: 5, Window: time.Second}, []flux.Option{flux.WithAtomicStore(flux.AtomicStoreConfig{Store: st, Limiter: "a"})}, flux.ErrInvalidOption},
		{"both stores", flux.Limit{Rate: 1}, []flux.Option{
			flux.WithAtomicStore(flux.AtomicStoreConfig{Store: st, Limiter: "a"}),
			flux.WithStore(flux.StoreConfig{Store: st, Limiter: "a"}),
		}, flux.ErrInvalidOption},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := flux.New(tc.lim, tc.opts...)
			if err == nil {
				l.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("New: %v; want %v", err, tc.want)
			}
		})
	}
	l := atomicLimiter(t, clock.NewManual(t0), st, flux.Limit{Rate: 1, Burst: 1}, flux.AtomicStoreConfig{})
	if err := l.SetLimit(t.Context(), flux.Limit{Algorithm: flux.LeakyBucket, Rate: 1}); !errors.Is(err, flux.ErrAlgorithmChange) {
		t.Fatalf("SetLimit to leaky-bucket: %v", err)
	}
}

// Two limiters on one store decide exactly as one algorithm.GCRA would,
// field by field, for a random sequence of checks, costs, peeks and
// batches at manual times.
func TestAtomicStoreMatchesGCRA(t *testing.T) {
	clk := clock.NewManual(t0)
	st := memstore.New(memstore.Options{Clock: clk})
	lim := flux.Limit{Rate: 3, Burst: 4.5}
	a := atomicLimiter(t, clk, st, lim, flux.AtomicStoreConfig{})
	b := atomicLimiter(t, clk, st, lim, flux.AtomicStoreConfig{})
	g, err := algorithm.NewGCRA(lim.Rate, lim.Burst)
	if err != nil {
		t.Fatal(err)
	}
	tats := map[string]int64{}
	step := func(key string, cost int) flux.Decision {
		tat, ok := tats[key]
		if !ok {
			tat = g.Fresh(0)
		}
		now, _ := clk.Now()
		next, d, _ := g.Step(tat, now, int64(cost))
		tats[key] = next
		return d
	}
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []string{"alice", "bob", "carol"}
	for i := range 600 {
		clk.Advance(time.Duration(rng.IntN(200)) * time.Millisecond)
		l := a
		if rng.IntN(2) == 1 {
			l = b
		}
		if rng.IntN(5) == 0 {
			reqs := make([]flux.Request, 1+rng.IntN(6))
			want := make([]flux.Decision, len(reqs))
			for j := range reqs {
				c := rng.IntN(3)
				reqs[j] = flux.Request{Key: keys[rng.IntN(len(keys))], Cost: c, Peek: c == 0}
				want[j] = step(reqs[j].Key, reqs[j].Cost)
			}
			out := make([]flux.Decision, len(reqs))
			if err := l.CheckBatch(t.Context(), reqs, out); err != nil {
				t.Fatal(err)
			}
			for j := range out {
				if out[j] != want[j] {
					t.Fatalf("step %d batch item %d %+v: got %+v; want %+v", i, j, reqs[j], out[j], want[j])
				}
			}
			continue
		}
		key, cost := keys[rng.IntN(len(keys))], rng.IntN(4)
		want := step(key, cost)
		var got flux.Decision
		if rng.IntN(3) == 0 {
			got, err = l.CheckNAsync(t.Context(), key, cost).Wait(t.Context())
		} else {
			got, err = l.CheckN(t.Context(), key, cost)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("step %d %s cost %d: got %+v; want %+v", i, key, cost, got, want)
		}
	}
	if s := a.StoreStats(); s.Loads == 0 || s.LoadErrors != 0 || s.Fallbacks != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// Many goroutines on two limiters sharing a store admit exactly the
// capacity of each key, nothing more.
func TestAtomicStoreConcurrentExact(t *testing.T) {
	clk := clock.NewManual(t0)
	st := memstore.New(memstore.Options{Clock: clk})
	lim := flux.Limit{Rate: 1, Burst: 9}
	ls := []*flux.Limiter{
		atomicLimiter(t, clk, st, lim, flux.AtomicStoreConfig{}),
		atomicLimiter(t, clk, st, lim, flux.AtomicStoreConfig{}),
	}
	var admitted [8]atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			l := ls[g%2]
			for i := range 60 {
				k := (g + i) % len(admitted)
				if i%10 == 0 {
					out := make([]flux.Decision, 3)
					reqs := []flux.Request{{Key: fmt.Sprint(k), Cost: 1}, {Key: fmt.Sprint((k + 1) % 8), Cost: 1}, {Key: fmt.Sprint(k), Cost: 1}}
					if err := l.CheckBatch(context.Background(), reqs, out); err != nil {
						t.Error(err)
						return
					}
					for j, d := range out {
						if d.Allowed {
							var n int
							fmt.Sscan(reqs[j].Key, &n)
							admitted[n].Add(1)
						}
					}
					continue
				}
				d, err := l.Check(context.Background(), fmt.Sprint(k))
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					admitted[k].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for k := range admitted {
		if n := admitted[k].Load(); n != 10 {
			t.Errorf("key %d: %d admitted; want exactly the capacity, 10", k, n)
		}
	}
}

// hangingStore answers nothing until its context ends while hang is set.
type hangingStore struct {
	*memstore.Store
	hang atomic.Bool
}

func (h *hangingStore) CheckGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error) {
	if h.hang.Load() {
		<-ctx.Done()
		return algorithm.Decision{}, ctx.Err()
	}
	return h.Store.CheckGCRA(ctx, limiter, key, g, now, cost)
}

// A failing or silent store: every policy answers within the timeout;
// local decides from what the store last answered and denies keys it has
// not seen; when the store is back it decides again.
func TestAtomicStoreFailurePolicies(t *testing.T) {
	for _, tc := range []struct {
		policy flux.StoreFailure
		hang   bool
	}{
		{flux.StoreFailLocal, false}, {flux.StoreFailLocal, true},
		{flux.StoreFailOpen, false}, {flux.StoreFailOpen, true},
		{flux.StoreFailClosed, false}, {flux.StoreFailClosed, true},
	} {
		t.Run(fmt.Sprintf("%v/hang=%v", tc.policy, tc.hang), func(t *testing.T) {
			clk := clock.NewManual(t0)
			st := &hangingStore{Store: memstore.New(memstore.Options{Clock: clk})}
			l := atomicLimiter(t, clk, st, flux.Limit{Rate: 1, Burst: 4}, flux.AtomicStoreConfig{
				OnFailure: tc.policy, Timeout: 20 * time.Millisecond, Backoff: time.Hour, RetryAfter: 3 * time.Second,
			})
			for range 5 {
				check(t, l, "spent", 1) // the store has it throttled
			}
			check(t, l, "light", 1) // 4 left
			if tc.hang {
				st.hang.Store(true)
			} else {
				st.Fail(errors.New("store down"))
			}
			start := time.Now()
			unknown := check(t, l, "unknown", 1)
			spent := check(t, l, "spent", 1)
			light := check(t, l, "light", 2)
			out := make([]flux.Decision, 2)
			if err := l.CheckBatch(t.Context(), []flux.Request{{Key: "unknown2", Cost: 1}, {Key: "light", Cost: 1}}, out); err != nil {
				t.Fatal(err)
			}
			if el := time.Since(start); el > time.Second {
				t.Fatalf("decisions with the store down took %v", el)
			}
			switch tc.policy {
			case flux.StoreFailOpen:
				if !unknown.Allowed || !spent.Allowed || !light.Allowed || !out[0].Allowed || !out[1].Allowed {
					t.Fatalf("open: %+v %+v %+v %+v", unknown, spent, light, out)
				}
			case flux.StoreFailClosed:
				if unknown.Allowed || spent.Allowed || light.Allowed || out[0].Allowed || out[1].Allowed || unknown.RetryAfter != 3*time.Second {
					t.Fatalf("closed: %+v %+v %+v %+v", unknown, spent, light, out)
				}
			case flux.StoreFailLocal:
				if unknown.Allowed || unknown.RetryAfter != 3*time.Second || out[0].Allowed {
					t.Fatalf("local: a key never checked was admitted: %+v %+v", unknown, out[0])
				}
				if spent.Allowed {
					t.Fatalf("local: a key the store throttled was admitted: %+v", spent)
				}
				if !light.Allowed || light.Remaining != 2 || !out[1].Allowed || out[1].Remaining != 1 {
					t.Fatalf("local: light key: %+v then %+v; want admitted with 2 then 1 left", light, out[1])
				}
			}
			s := l.StoreStats()
			if s.Fallbacks != 5 || s.LoadErrors == 0 {
				t.Fatalf("stats %+v; want 5 fallbacks and load errors", s)
			}
			// The store is back: after the backoff, it decides again.
			st.hang.Store(false)
			st.Recover()
			clk.Advance(2 * time.Hour)
			for range 5 {
				if d := check(t, l, "fresh", 1); !d.Allowed {
					t.Fatalf("store back: %+v", d)
				}
			}
			if d := check(t, l, "fresh", 1); d.Allowed {
				t.Fatalf("store back: 6th check of a fresh key admitted: %+v", d)
			}
			if s2 := l.StoreStats(); s2.Fallbacks != s.Fallbacks || s2.Loads <= s.Loads {
				t.Fatalf("store back, but %+v after %+v", s2, s)
			}
		})
	}
}

// Close waits for asynchronous checks in flight; later calls fail.
func TestAtomicStoreClose(t *testing.T) {
	clk := clock.NewManual(t0)
	st := &hangingStore{Store: memstore.New(memstore.Options{Clock: clk})}
	st.hang.Store(true)
	l, err := flux.New(flux.Limit{Rate: 1}, flux.WithClock(clk), flux.WithAtomicStore(flux.AtomicStoreConfig{
		Store: st, Limiter: "api", Timeout: 50 * time.Millisecond, OnFailure: flux.StoreFailOpen,
	}))
	if err != nil {
		t.Fatal(err)
	}
	f := l.CheckAsync(t.Context(), "k")
	bf := l.CheckBatchAsync(t.Context(), []flux.Request{{Key: "k", Cost: 1}})
	l.Close()
	if d, err := f.Wait(t.Context()); err != nil || !d.Allowed {
		t.Fatalf("future after Close: %+v %v; want the open policy's admission", d, err)
	}
	if out, err := bf.Wait(t.Context()); err != nil || !out[0].Allowed {
		t.Fatalf("batch future after Close: %+v %v", out, err)
	}
	if _, err := l.Check(t.Context(), "k"); !errors.Is(err, flux.ErrClosed) {
		t.Fatalf("Check after Close: %v", err)
	}
	if _, err := l.CheckAsync(t.Context(), "k").Wait(t.Context()); !errors.Is(err, flux.ErrClosed) {
		t.Fatalf("CheckAsync after Close: %v", err)
	}
}

// batchingStore adds store.AtomicGCRABatch to a memstore, so that single
// checks are combined into batches; with slow set, every batch takes that
// long.
type batchingStore struct {
	*memstore.Store
	batches, items, singles atomic.Int64
	slow                    atomic.Int64 // ns
}

func (s *batchingStore) CheckGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error) {
	s.singles.Add(1)
	if d := time.Duration(s.slow.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return algorithm.Decision{}, ctx.Err()
		}
	}
	return s.Store.CheckGCRA(ctx, limiter, key, g, now, cost)
}

func (s *batchingStore) CheckGCRABatch(ctx context.Context, limiter string, g algorithm.GCRA, now int64, keys []string, costs []int64, out []algorithm.Decision, errs []error) error {
	s.batches.Add(1)
	s.items.Add(int64(len(keys)))
	if d := time.Duration(s.slow.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i, k := range keys {
		out[i], errs[i] = s.Store.CheckGCRA(ctx, limiter, k, g, now, costs[i])
	}
	return nil
}

// Concurrent single checks on a store that pipelines are combined into
// batches and still admit exactly the capacity of each key; a store too
// slow for the timeout leaves every check to the failure policy in time.
func TestAtomicStoreCombined(t *testing.T) {
	clk := clock.NewManual(t0)
	st := &batchingStore{Store: memstore.New(memstore.Options{Clock: clk})}
	lim := flux.Limit{Rate: 1, Burst: 19}
	ls := []*flux.Limiter{
		atomicLimiter(t, clk, st, lim, flux.AtomicStoreConfig{Timeout: 5 * time.Second}),
		atomicLimiter(t, clk, st, lim, flux.AtomicStoreConfig{Timeout: 5 * time.Second}),
	}
	st.slow.Store(int64(200 * time.Microsecond)) // let checks queue up
	var admitted [6]atomic.Int64
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 30 {
				k := (g*7 + i) % len(admitted)
				d, err := ls[g%2].Check(context.Background(), fmt.Sprint(k))
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					admitted[k].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for k := range admitted {
		if n := admitted[k].Load(); n != 20 {
			t.Errorf("key %d: %d admitted; want exactly the capacity, 20", k, n)
		}
	}
	if b, n, one := st.batches.Load(), st.items.Load(), st.singles.Load(); n+one != 32*30 || b == 0 || b >= n {
		t.Fatalf("%d checks in %d batches, %d alone: not combined", n, b, one)
	}
	for _, l := range ls {
		if s := l.StoreStats(); s.LoadErrors != 0 || s.Fallbacks != 0 {
			t.Fatalf("stats %+v", s)
		}
	}

	// Too slow: every check is answered by the policy within about the
	// timeout, queued ones included.
	slow := atomicLimiter(t, clk, st, lim, flux.AtomicStoreConfig{Timeout: 30 * time.Millisecond, OnFailure: flux.StoreFailOpen})
	st.slow.Store(int64(time.Second))
	start := time.Now()
	var late atomic.Int64
	for range 20 {
		wg.Go(func() {
			d, err := slow.Check(context.Background(), "x")
			if err != nil || !d.Allowed {
				t.Errorf("slow store, open policy: %+v %v", d, err)
			}
			if time.Since(start) > 2*time.Second {
				late.Add(1)
			}
		})
	}
	wg.Wait()
	if late.Load() > 0 {
		t.Fatalf("%d checks waited more than 2s on a 30ms timeout", late.Load())
	}
	if s := slow.StoreStats(); s.Fallbacks != 20 {
		t.Fatalf("stats %+v; want 20 fallbacks", s)
	}
}
