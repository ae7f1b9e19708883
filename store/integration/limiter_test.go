package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/failure"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/internal/faultproxy"
	"github.com/fluxlimiter/flux/internal/fluxtest"
)

// newLimiter is a limiter closed with the test.
var newLimiter = fluxtest.Start

// Many goroutines on many keys through a real store decide exactly as an
// in-memory limiter given the same requests, phase by phase; and after
// Close, a new limiter on the store holds every key's state as the
// in-memory one does: no update was lost.
func TestConcurrencyMatchesMemory(t *testing.T) {
	each(t, func(t *testing.T, b backend) {
		for _, through := range []bool{false, true} {
			t.Run(fmt.Sprintf("through=%v", through), func(t *testing.T) {
				clk := clock.NewManual(t0)
				st := b.open(t, "", clk)
				lim := flux.Limit{Rate: 10, Burst: 19}
				cfg := flux.StoreConfig{Store: st, Limiter: fmt.Sprint("conc-", through), Mode: writeMode(through), FlushEvery: 10 * time.Millisecond, Timeout: 5 * time.Second}
				l := newLimiter(t, lim, flux.WithClock(clk), flux.WithShards(4), flux.WithStore(cfg))
				mem := newLimiter(t, lim, flux.WithClock(clk))
				const keys, goroutines = 150, 12
				rng := rand.New(rand.NewPCG(7, uint64(len(b.name))))
				for phase := range 3 {
					var reqs []string
					for k := range keys {
						for range rng.IntN(30) {
							reqs = append(reqs, fmt.Sprintf("k%03d", k))
						}
					}
					rng.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
					var got sync.Map // key -> *atomic.Int64
					next := make(chan string)
					var wg sync.WaitGroup
					for range goroutines {
						wg.Go(func() {
							for k := range next {
								d, err := l.Check(context.Background(), k)
								if err != nil {
									t.Error(err)
									continue
								}
								if d.Allowed {
									v, _ := got.LoadOrStore(k, new(atomic.Int64))
									v.(*atomic.Int64).Add(1)
								}
							}
						})
					}
					for _, k := range reqs {
						next <- k
					}
					close(next)
					wg.Wait()
					want := map[string]int64{}
					for _, k := range reqs {
						if d, err := mem.Check(t.Context(), k); err != nil {
							t.Fatal(err)
						} else if d.Allowed {
							want[k]++
						}
					}
					for k := range keys {
						key := fmt.Sprintf("k%03d", k)
						var n int64
						if v, ok := got.Load(key); ok {
							n = v.(*atomic.Int64).Load()
						}
						if n != want[key] {
							t.Fatalf("phase %d, %s: %d admitted through the store, %d in memory", phase, key, n, want[key])
						}
					}
					clk.Advance(700 * time.Millisecond)
				}
				if s := storeTotals(l); s.LoadErrors != 0 || s.SaveErrors != 0 || s.Fallbacks != 0 || s.Loads == 0 {
					t.Fatalf("store stats %+v", s)
				}
				l.Close()
				again := newLimiter(t, lim, flux.WithClock(clk), flux.WithShards(3), flux.WithStore(cfg))
				for k := range keys {
					key := fmt.Sprintf("k%03d", k)
					a, err := again.Peek(t.Context(), key)
					if err != nil {
						t.Fatal(err)
					}
					m, _ := mem.Peek(t.Context(), key)
					if a != m {
						t.Fatalf("%s after a restart: %+v; in memory %+v", key, a, m)
					}
				}
			})
		}
	})
}

// The store stops answering (silent, or refusing connections) while keys
// are loading and saving: every decision still arrives within the timeout
// (plus scheduling slack), by each policy; once the store is back, states
// are saved again.
func TestStoreDown(t *testing.T) {
	const timeout = 50 * time.Millisecond
	const slack = 400 * time.Millisecond // -race on a shared, loaded machine
	each(t, func(t *testing.T, b backend) {
		for _, tc := range []struct {
			policy  failure.Policy
			through bool
			cut     string
		}{
			{failure.Local, false, "hang"},
			{failure.Local, true, "refuse"},
			{failure.Open, false, "refuse"},
			{failure.Open, true, "hang"},
			{failure.Closed, false, "hang"},
			{failure.Closed, true, "refuse"},
		} {
			t.Run(fmt.Sprintf("%v/through=%v/%s", tc.policy, tc.through, tc.cut), func(t *testing.T) {
				clk := clock.NewManual(t0)
				proxy := faultproxy.Start(t, b.addr)
				st := b.open(t, proxy.Addr(), clk)
				direct := b.open(t, "", clk)
				ns := "down-" + tc.policy.String() + fmt.Sprint(tc.through)
				l := newLimiter(t, flux.Limit{Rate: 1, Burst: 4}, flux.WithClock(clk), flux.WithShards(2), flux.WithStore(flux.StoreConfig{
					Store: st, Limiter: ns, Mode: writeMode(tc.through), FlushEvery: 20 * time.Millisecond,
					Timeout: timeout, OnFailure: tc.policy, RetryAfter: 7 * time.Second,
				}))
				timed := func(key string, cost int) flux.Decision {
					t.Helper()
					start := time.Now()
					d, err := l.CheckN(t.Context(), key, cost)
					if el := time.Since(start); el > timeout+slack {
						t.Fatalf("%s: decision took %v (timeout %v)", key, el, timeout)
					}
					if err != nil {
						t.Fatalf("%s: %v", key, err)
					}
					return d
				}
				// With the store up but slower than the timeout (a loaded
				// machine), a check may still be decided by the policy:
				// repeat until spent is spent and known is held.
				deadline := time.Now().Add(10 * time.Second)
				for n := 0; n < 5; {
					if timed("spent", 1).Allowed {
						n++
					} else if time.Now().After(deadline) {
						t.Fatalf("spent: %d admitted with the store up", n)
					}
				}
				for !timed("known", 1).Allowed {
					if time.Now().After(deadline) {
						t.Fatal("known not admitted with the store up")
					}
				}
				if tc.cut == "hang" {
					proxy.Hang()
				} else {
					proxy.Refuse()
				}
				unknown := timed("unknown", 1)
				spent := timed("spent", 1)
				known := timed("known", 1)
				switch tc.policy {
				case failure.Open:
					if !unknown.Allowed {
						t.Fatalf("open: a key that could not load was denied: %+v", unknown)
					}
				case failure.Closed:
					if unknown.Allowed || unknown.RetryAfter != 7*time.Second {
						t.Fatalf("closed: a key that could not load: %+v", unknown)
					}
				case failure.Local:
					if unknown.Allowed || unknown.RetryAfter != 7*time.Second {
						t.Fatalf("local: a key never loaded was admitted: %+v", unknown)
					}
				}
				if spent.Allowed {
					t.Fatalf("a key throttled in memory was admitted: %+v", spent)
				}
				// Write-through under closed refuses what it cannot save;
				// otherwise a loaded key is decided from memory.
				if want := !(tc.through && tc.policy == failure.Closed); known.Allowed != want {
					t.Fatalf("known key with the store down: %+v; want allowed=%v", known, want)
				}
				for range 10 {
					timed(fmt.Sprint("more", rand.IntN(1000)), 1)
				}
				if s := storeTotals(l); s.Fallbacks == 0 || s.LoadErrors+s.SaveErrors == 0 {
					t.Fatalf("store down but stats %+v", s)
				}
				proxy.Restore()
				// Saving resumes: an admission of "known" made after the
				// store is back reaches it (under write-through before it is
				// answered, under write-behind at a later flush).
				deadline = time.Now().Add(10 * time.Second)
				for {
					clk.Advance(time.Second) // refill, and leave the failure backoff
					if timed("known", 1).Allowed {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("no admission once the store was back: stats %+v", storeTotals(l))
					}
					time.Sleep(20 * time.Millisecond)
				}
				p, _ := l.Peek(t.Context(), "known")
				now, _ := clk.Now()
				want := now + int64(p.ResetAfter)
				for {
					ctx, cancel := context.WithTimeout(t.Context(), time.Second)
					e, found, err := direct.Load(ctx, ns, "known")
					cancel()
					if err == nil && found {
						if tat, _ := (algorithm.GCRA{}).DecodeState(e.State); tat == want {
							break
						}
					}
					if time.Now().After(deadline) {
						t.Fatalf("saving did not resume once the store was back: %+v %v %v; stats %+v", e, found, err, storeTotals(l))
					}
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
	})
}

// Two limiters with their own connections to one store, in atomic mode,
// under concurrent load (single checks and batches): together they admit
// exactly what one algorithm.GCRA admits for the same requests at the same
// times.
func TestAtomicSharedExact(t *testing.T) {
	each(t, func(t *testing.T, b backend) {
		clk := clock.NewManual(t0)
		lim := flux.Limit{Rate: 5, Burst: 9}
		ls := make([]*flux.Limiter, 2)
		for i := range ls {
			ls[i] = newLimiter(t, lim, flux.WithClock(clk), flux.WithStore(flux.StoreConfig{
				Store: b.open(t, "", clk), Limiter: "shared", Mode: flux.StoreAtomic, Timeout: 5 * time.Second,
			}))
		}
		g, err := algorithm.NewGCRA(lim.Rate, lim.Burst)
		if err != nil {
			t.Fatal(err)
		}
		tats := map[string]int64{}
		rng := rand.New(rand.NewPCG(3, 4))
		const keys = 20
		for phase := range 4 {
			demand := map[string]int{}
			var reqs []string
			for k := range keys {
				key := fmt.Sprint("user", k)
				demand[key] = rng.IntN(25)
				for range demand[key] {
					reqs = append(reqs, key)
				}
			}
			rng.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
			var mu sync.Mutex
			got := map[string]int{}
			var wg sync.WaitGroup
			const workers = 8
			for w := range workers {
				wg.Go(func() {
					l := ls[w%2]
					var mine []string
					for i := w; i < len(reqs); i += workers {
						mine = append(mine, reqs[i])
					}
					for len(mine) > 0 {
						n := 1
						if rng := len(mine) % 3; rng == 0 {
							n = min(4, len(mine)) // a batch now and then
						}
						batch := make([]flux.Request, n)
						for i := range batch {
							batch[i] = flux.Request{Key: mine[i], Cost: 1}
						}
						mine = mine[n:]
						out := make([]flux.Decision, n)
						var err error
						if n == 1 { // single checks (combined into pipelines on Redis)
							out[0], err = l.Check(context.Background(), batch[0].Key)
						} else {
							err = l.CheckBatch(context.Background(), batch, out)
						}
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						for i, d := range out {
							if d.Allowed {
								got[batch[i].Key]++
							}
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			now, _ := clk.Now()
			for key, n := range demand {
				want := 0
				for range n {
					tat, ok := tats[key]
					if !ok {
						tat = g.Fresh(now)
					}
					next, d, _ := g.Step(tat, now, 1)
					tats[key] = next
					if d.Allowed {
						want++
					}
				}
				if got[key] != want {
					t.Fatalf("phase %d, %s: the two limiters admitted %d of %d; algorithm.GCRA admits %d", phase, key, got[key], n, want)
				}
			}
			clk.Advance(time.Duration(rng.IntN(1500)) * time.Millisecond)
		}
		for _, l := range ls {
			if s := storeTotals(l); s.LoadErrors != 0 || s.Fallbacks != 0 {
				t.Fatalf("store stats %+v", s)
			}
		}
	})
}

// writeMode is the store mode of a write-through or write-behind test.
func writeMode(through bool) flux.StoreMode {
	if through {
		return flux.StoreWriteThrough
	}
	return flux.StoreWriteBehind
}

// storeTotals adds up the limiter's store counters over its shards.
func storeTotals(l *flux.Limiter) flux.Stats {
	var t flux.Stats
	for _, s := range l.Stats() {
		t.Loads += s.Loads
		t.LoadErrors += s.LoadErrors
		t.Saves += s.Saves
		t.SaveErrors += s.SaveErrors
		t.Fallbacks += s.Fallbacks
		t.Foreign += s.Foreign
		t.Dirty += s.Dirty
	}
	return t
}
