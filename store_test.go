package flux_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/memstore"
)

func storeLimiter(t *testing.T, clk *clock.Manual, st store.Store, cfg flux.StoreConfig, opts ...flux.Option) *flux.Limiter {
	t.Helper()
	cfg.Store = st
	if cfg.Limiter == "" {
		cfg.Limiter = "api"
	}
	l, err := flux.New(flux.Limit{Rate: 1, Burst: 4}, append([]flux.Option{flux.WithClock(clk), flux.WithStore(cfg), flux.WithShards(2)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func drain(t *testing.T, l *flux.Limiter, key string) int {
	t.Helper()
	n := 0
	for {
		d, err := l.Check(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Allowed {
			return n
		}
		n++
	}
}

// A restart on the same store forgives nothing: write-behind saves on Close,
// write-through before each admission is answered.
func TestStoreRestart(t *testing.T) {
	for _, through := range []bool{false, true} {
		t.Run(fmt.Sprintf("through=%v", through), func(t *testing.T) {
			clk := clock.NewManual(t0)
			st := memstore.New(memstore.Options{Clock: clk})
			a := storeLimiter(t, clk, st, flux.StoreConfig{Through: through, FlushEvery: time.Hour})
			if n := drain(t, a, "alice"); n != 5 {
				t.Fatalf("admitted %d; want 5", n)
			}
			check(t, a, "bob", 2)
			if through && st.Len("api") != 2 {
				t.Fatalf("write-through: %d entries stored right after the decisions; want 2", st.Len("api"))
			}
			if !through && st.Len("api") != 0 {
				t.Fatalf("write-behind saved before its flush: %d entries", st.Len("api"))
			}
			a.Close()
			if st.Len("api") != 2 {
				t.Fatalf("after Close: %d entries stored; want 2", st.Len("api"))
			}
			b := storeLimiter(t, clk, st, flux.StoreConfig{Through: through})
			if d := check(t, b, "alice", 1); d.Allowed {
				t.Fatalf("restart forgave alice: %+v", d)
			}
			if d := check(t, b, "bob", 0); d.Remaining != 3 {
				t.Fatalf("bob after restart: %+v; want 3 remaining", d)
			}
			clk.Advance(time.Second)
			if d := check(t, b, "alice", 1); !d.Allowed {
				t.Fatalf("alice after 1s: %+v", d)
			}
		})
	}
}

func TestStoreWriteBehindFlushes(t *testing.T) {
	clk := clock.NewManual(t0)
	st := memstore.New(memstore.Options{Clock: clk})
	l := storeLimiter(t, clk, st, flux.StoreConfig{FlushEvery: 5 * time.Millisecond})
	check(t, l, "k", 3)
	deadline := time.Now().Add(5 * time.Second)
	for st.Len("api") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("write-behind never flushed")
		}
		time.Sleep(2 * time.Millisecond)
	}
	e, found, err := st.Load(t.Context(), "api", "k")
	if err != nil || !found || e.IdleAt != t0.Add(3*time.Second).UnixNano() {
		t.Fatalf("stored %+v %v %v; want IdleAt t0+3s", e, found, err)
	}
	if s := l.StoreStats(); s.Saves == 0 || s.Loads != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// Concurrent requests for one key share one load and are decided in order;
// the result equals an in-memory limiter's.
func TestStoreParkingMatchesMemory(t *testing.T) {
	clk := clock.NewManual(t0)
	st := memstore.New(memstore.Options{Clock: clk})
	l := storeLimiter(t, clk, st, flux.StoreConfig{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := map[string]int{}
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				key := fmt.Sprintf("k%d", (g+i)%10)
				d, err := l.Check(context.Background(), key)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					mu.Lock()
					admitted[key]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for k, n := range admitted {
		if n != 5 {
			t.Fatalf("%s admitted %d; want exactly the capacity 5", k, n)
		}
	}
	if len(admitted) != 10 {
		t.Fatalf("%d keys admitted", len(admitted))
	}
	if s := l.StoreStats(); s.Loads > 10 || s.Loads == 0 {
		t.Fatalf("%d loads for 10 keys: loads are not shared", s.Loads)
	}
	// A batch mixing held and missing keys.
	out := make([]flux.Decision, 4)
	if err := l.CheckBatch(t.Context(), []flux.Request{{Key: "k1", Cost: 1}, {Key: "new", Cost: 2}, {Key: "new", Cost: 3}, {Key: "new", Cost: 1}}, out); err != nil {
		t.Fatal(err)
	}
	if out[0].Allowed || !out[1].Allowed || !out[2].Allowed || out[3].Allowed {
		t.Fatalf("batch %+v", out)
	}
}

// A failing store: each policy decides within the timeout; a key not loaded
// since start is never treated as fresh under local; saving resumes when
// the store is back.
func TestStoreFailurePolicies(t *testing.T) {
	for _, tc := range []struct {
		policy  flux.StoreFailure
		through bool
		allowed bool
	}{
		{flux.StoreFailLocal, false, false},
		{flux.StoreFailOpen, false, true},
		{flux.StoreFailClosed, false, false},
		{flux.StoreFailClosed, true, false},
	} {
		t.Run(fmt.Sprintf("%v/through=%v", tc.policy, tc.through), func(t *testing.T) {
			clk := clock.NewManual(t0)
			st := memstore.New(memstore.Options{Clock: clk})
			l := storeLimiter(t, clk, st, flux.StoreConfig{OnFailure: tc.policy, Through: tc.through, FlushEvery: 5 * time.Millisecond})
			check(t, l, "known", 1) // loaded while the store is up
			st.Fail(errors.New("store down"))
			start := time.Now()
			d := check(t, l, "unknown", 1)
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("decision took %v", el)
			}
			if d.Allowed != tc.allowed {
				t.Fatalf("unknown key with the store down: %+v; want allowed=%v", d, tc.allowed)
			}
			dk := check(t, l, "known", 1)
			wantKnown := !(tc.policy == flux.StoreFailClosed && tc.through)
			if dk.Allowed != wantKnown {
				t.Fatalf("known key with the store down: %+v; want allowed=%v", dk, wantKnown)
			}
			if s := l.StoreStats(); s.Fallbacks == 0 {
				t.Fatalf("no fallback counted: %+v", s)
			}
			st.Recover()
			deadline := time.Now().Add(5 * time.Second)
			for {
				e, found, err := st.Load(t.Context(), "api", "known")
				if err == nil && found && e.IdleAt > t0.UnixNano() {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("saving did not resume once the store was back")
				}
				check(t, l, "other", 0)
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}
