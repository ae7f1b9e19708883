package pgstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/internal/faultproxy"
	"github.com/fluxlimiter/flux/internal/storeenv"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/pgstore"
	"github.com/fluxlimiter/flux/store/storetest"
)

const env = "FLUX_POSTGRES_URL"

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newPool returns a pool on the test server, closed at cleanup.
func newPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	u := storeenv.URL(tb, env, "postgres://postgres@127.0.0.1:5432/test")
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		tb.Fatalf("%s: %v", env, err)
	}
	cfg.MaxConns = 16
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("%s: %v", env, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		storeenv.Unreachable(tb, env, err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// schema returns a private schema name, dropped at cleanup.
func schema(tb testing.TB, pool *pgxpool.Pool) string {
	name := "fluxtest_" + storeenv.Suffix()
	tb.Cleanup(func() {
		_, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE")
		if err != nil {
			tb.Errorf("drop schema %s: %v", name, err)
		}
	})
	return name
}

func newStore(tb testing.TB, pool *pgxpool.Pool, opts pgstore.Options) *pgstore.Store {
	tb.Helper()
	if pool == nil {
		pool = newPool(tb)
	}
	if opts.Schema == "" {
		opts.Schema = schema(tb, pool)
	}
	if opts.CleanupInterval == 0 {
		opts.CleanupInterval = -1
	}
	s, err := pgstore.New(tb.Context(), pool, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	pool := newPool(t)
	storetest.Run(t, func(t *testing.T) store.Store { return newStore(t, pool, pgstore.Options{}) })
}

// TestSchemaIdempotent: processes starting together create the schema once
// and all succeed; an existing schema is reused with its data.
func TestSchemaIdempotent(t *testing.T) {
	pool := newPool(t)
	name := schema(t, pool)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := pgstore.New(t.Context(), pool, pgstore.Options{Schema: name, CleanupInterval: -1})
			if err != nil {
				t.Errorf("concurrent New: %v", err)
				return
			}
			_ = s.Close()
		})
	}
	wg.Wait()
	a := newStore(t, pool, pgstore.Options{Schema: name})
	if err := a.Save(t.Context(), "l", []store.Entry{{Key: "k", State: []byte("x"), IdleAt: store.NoExpiry}}); err != nil {
		t.Fatal(err)
	}
	b := newStore(t, pool, pgstore.Options{Schema: name})
	if e, ok, err := b.Load(t.Context(), "l", "k"); err != nil || !ok || string(e.State) != "x" {
		t.Fatalf("second store on the schema: %+v, %v, %v", e, ok, err)
	}
	// NoCreate on a schema that does not exist: calls fail, nothing panics.
	c := newStore(t, pool, pgstore.Options{Schema: "fluxtest_missing_" + storeenv.Suffix(), NoCreate: true})
	if _, _, err := c.Load(t.Context(), "l", "k"); err == nil {
		t.Fatal("Load on a missing schema returned nil")
	}
	if !strings.Contains(pgstore.SchemaSQL(""), `CREATE TABLE IF NOT EXISTS "flux".state`) {
		t.Fatalf("SchemaSQL(\"\") = %s", pgstore.SchemaSQL(""))
	}
}

func TestInvalidLimiterName(t *testing.T) {
	s := newStore(t, nil, pgstore.Options{})
	for _, l := range []string{"nul\x00", "\xff"} {
		if _, _, err := s.Load(t.Context(), l, "k"); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Load(limiter %q) = %v, want ErrInvalidKey", l, err)
		}
	}
}

func count(t *testing.T, pool *pgxpool.Pool, schema, table string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM "+pgx.Identifier{schema, table}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCleanup: rows go once the clock passes max(IdleAt, written) + margin.
func TestCleanup(t *testing.T) {
	pool := newPool(t)
	name := schema(t, pool)
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	s := newStore(t, pool, pgstore.Options{Schema: name, Clock: clk, Margin: time.Second})
	ctx := t.Context()
	now, _ := clk.Now()
	sec := int64(time.Second)
	err := s.Save(ctx, "l", []store.Entry{
		{Key: "past", State: []byte("p"), IdleAt: now - 3600*sec}, // expires at now + margin
		{Key: "soon", State: []byte("s"), IdleAt: now + 2*sec},
		{Key: "month", State: []byte("m"), IdleAt: now + 31*24*3600*sec},
		{Key: "never", State: []byte("n"), IdleAt: store.NoExpiry},
	})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := algorithm.NewGCRA(1, 0)
	if _, err := s.CheckGCRA(ctx, "l", "g", g, now, 1); err != nil { // TAT = now + 1 s
		t.Fatal(err)
	}
	step := func(d time.Duration, want int) {
		t.Helper()
		clk.Advance(d)
		n, err := s.Cleanup(ctx)
		if err != nil || n != want {
			t.Fatalf("Cleanup at +%v = %d, %v; want %d", d, n, err, want)
		}
	}
	step(time.Second, 0)         // past: expires at now+1s, not after
	step(time.Nanosecond, 1)     // past
	step(time.Second, 1)         // gcra: TAT now+1s + margin
	step(time.Second, 1)         // soon: now+2s+1s
	step(31*24*time.Hour, 1)     // month
	step(10*365*24*time.Hour, 0) // never stays
	if n := count(t, pool, name, "state"); n != 1 {
		t.Fatalf("%d rows left, want 1", n)
	}
}

func TestBackgroundCleanup(t *testing.T) {
	pool := newPool(t)
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	var mu sync.Mutex
	removed := 0
	s := newStore(t, pool, pgstore.Options{
		Clock: clk, Margin: time.Second, CleanupInterval: 10 * time.Millisecond,
		OnCleanup: func(n int, err error) {
			if err != nil {
				t.Errorf("background cleanup: %v", err)
			}
			mu.Lock()
			removed += n
			mu.Unlock()
		},
	})
	now, _ := clk.Now()
	if err := s.Save(t.Context(), "l", []store.Entry{{Key: "k", State: []byte("x"), IdleAt: now}}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		r := removed
		mu.Unlock()
		if r == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("background cleanup removed %d rows in 5s, want 1", r)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Close(); err != nil { // stops and waits for the goroutine (goleak checks)
		t.Fatal(err)
	}
}

// TestAtomicTwoPools: two stores on two pools hammer one key at the same
// manual instants; together they admit exactly what algorithm.GCRA admits.
func TestAtomicTwoPools(t *testing.T) {
	poolA, poolB := newPool(t), newPool(t)
	name := schema(t, poolA)
	sa := newStore(t, poolA, pgstore.Options{Schema: name})
	sb := newStore(t, poolB, pgstore.Options{Schema: name})
	retries := pgstore.GCRARetries()
	defer func() { t.Logf("statement retries after a lost race: %d", pgstore.GCRARetries()-retries) }()
	g, _ := algorithm.NewGCRA(100, 19) // capacity 20, T = 10 ms
	storetest.SharedExact(t, []store.AtomicGCRA{sa, sb}, g, 8, 5, 4, 7)
}

// TestServerTime: with ServerTime, two pools hammering one key in real
// time never admit more than capacity + rate × elapsed.
func TestServerTime(t *testing.T) {
	poolA, poolB := newPool(t), newPool(t)
	name := schema(t, poolA)
	sa := newStore(t, poolA, pgstore.Options{Schema: name, ServerTime: true})
	sb := newStore(t, poolB, pgstore.Options{Schema: name, ServerTime: true})
	g, _ := algorithm.NewGCRA(20, 4) // capacity 5, T = 50 ms
	storetest.ServerTimeBound(t, []store.AtomicGCRA{sa, sb}, g, 4, 300*time.Millisecond)
	// A peek reads the server clock too, and consumes nothing.
	d1, err := sa.CheckGCRA(t.Context(), "api", "fresh", g, 0, 0)
	if err != nil || !d1.Allowed || d1.Remaining != 5 {
		t.Fatalf("peek = %+v, %v", d1, err)
	}
}

// TestUnreachable: a closed port fails fast; a server that accepts and
// never answers fails within the context deadline.
func TestUnreachable(t *testing.T) {
	closedAddr, silentAddr := faultproxy.ClosedAddr(t), faultproxy.Silent(t)
	for _, tc := range []struct {
		name, addr       string
		deadline, within time.Duration
	}{
		{"closed port", closedAddr, 2 * time.Second, 200 * time.Millisecond},
		{"silent server", silentAddr, 300 * time.Millisecond, 800 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), tc.deadline)
			start := time.Now()
			_, err := pgstore.Open(ctx, "postgres://postgres@"+tc.addr+"/test?connect_timeout=5", pgstore.Options{})
			cancel()
			if err == nil {
				t.Fatal("Open returned nil")
			}
			if d := time.Since(start); d > tc.within {
				t.Errorf("Open took %v, want ≤ %v", d, tc.within)
			}
			// A store whose pool points there (created lazily, as a
			// server that goes away later would look).
			pool, err := pgxpool.New(t.Context(), "postgres://postgres@"+tc.addr+"/test")
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			s, err := pgstore.New(t.Context(), pool, pgstore.Options{NoCreate: true, CleanupInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			storetest.Unreachable(t, s, tc.deadline, tc.within)
		})
	}
}

func TestOpen(t *testing.T) {
	u := storeenv.URL(t, env, "postgres://postgres@127.0.0.1:5432/test")
	pool := newPool(t)
	name := schema(t, pool)
	s, err := pgstore.Open(t.Context(), u, pgstore.Options{Schema: name})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Ping after Close = %v", err)
	}
	if err := s.Pool().Ping(t.Context()); err == nil {
		t.Fatal("the pool Open made is still open after Close")
	}
	if _, err := pgstore.Open(t.Context(), "postgres://%zz", pgstore.Options{}); err == nil {
		t.Fatal("Open of a bad URL returned nil")
	}
}
