package redisstore_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/internal/faultproxy"
	"github.com/fluxlimiter/flux/internal/storeenv"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/redisstore"
	"github.com/fluxlimiter/flux/store/storetest"
)

const env = "FLUX_REDIS_URL"

func TestMain(m *testing.M) {
	redis.SetLogger(quiet{}) // the unreachable-server tests make go-redis log every dial
	goleak.VerifyTestMain(m)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// newClient returns a client of the test server, closed at cleanup.
func newClient(tb testing.TB) *redis.Client {
	tb.Helper()
	u := storeenv.URL(tb, env, "redis://127.0.0.1:6379/0")
	o, err := redis.ParseURL(u)
	if err != nil {
		tb.Fatalf("%s: %v", env, err)
	}
	o.ContextTimeoutEnabled = true
	o.PoolSize = 64
	rdb := redis.NewClient(o)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		storeenv.Unreachable(tb, env, err)
	}
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// prefix returns a private key prefix and deletes its keys at cleanup.
func prefix(tb testing.TB, rdb *redis.Client) string {
	p := "fluxtest:" + storeenv.Suffix() + ":"
	tb.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, p+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for lo := 0; lo < len(keys); lo += 1000 {
			rdb.Del(ctx, keys[lo:min(lo+1000, len(keys))]...)
		}
	})
	return p
}

func newStore(tb testing.TB, opts redisstore.Options) (*redisstore.Store, *redis.Client) {
	rdb := newClient(tb)
	if opts.Prefix == "" {
		opts.Prefix = prefix(tb, rdb)
	}
	s := redisstore.New(rdb, opts)
	tb.Cleanup(func() { _ = s.Close() })
	return s, rdb
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := newStore(t, redisstore.Options{})
		return s
	})
}

func TestExpiry(t *testing.T) {
	s, rdb := newStore(t, redisstore.Options{Margin: 50 * time.Millisecond})
	ctx := t.Context()
	now := time.Now()
	month := now.Add(31 * 24 * time.Hour).UnixNano()
	err := s.Save(ctx, "l", []store.Entry{
		{Key: "soon", State: []byte("s"), IdleAt: now.Add(40 * time.Millisecond).UnixNano()},
		{Key: "month", State: []byte("m"), IdleAt: month},
		{Key: "never", State: []byte("n"), IdleAt: store.NoExpiry},
		{Key: "past", State: []byte("p"), IdleAt: now.Add(-time.Hour).UnixNano()},
	})
	if err != nil {
		t.Fatal(err)
	}
	pttl := func(key string) time.Duration {
		t.Helper()
		keys, err := rdb.Keys(ctx, "*s:l:"+key).Result()
		if err != nil || len(keys) != 1 {
			t.Fatalf("keys for %q: %v, %v", key, keys, err)
		}
		d, err := rdb.PTTL(ctx, keys[0]).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := pttl("soon"); d <= 0 || d > 91*time.Millisecond {
		t.Errorf("PTTL(soon) = %v, want in (0, 40ms + 50ms]", d)
	}
	if d := pttl("month"); d < 31*24*time.Hour-time.Minute || d > 31*24*time.Hour+time.Second {
		t.Errorf("PTTL(month) = %v, want about 31 days: each key has its own TTL", d)
	}
	if d := pttl("never"); d != -1 {
		t.Errorf("PTTL(never) = %v, want -1 (no TTL)", d)
	}
	// "past" gets only the margin; on a loaded machine it may already be
	// gone, which is as right as a TTL within the margin.
	if keys, err := rdb.Keys(ctx, "*s:l:past").Result(); err != nil {
		t.Fatal(err)
	} else if len(keys) == 1 {
		if d, err := rdb.PTTL(ctx, keys[0]).Result(); err != nil || d <= 0 || d > 50*time.Millisecond {
			t.Errorf("PTTL(past) = %v, %v; want the margin", d, err)
		}
	}
	time.Sleep(150 * time.Millisecond)
	if _, ok, err := s.Load(ctx, "l", "soon"); ok || err != nil {
		t.Errorf("Load(soon) after its TTL = %v, %v; want gone", ok, err)
	}
	if _, ok, err := s.Load(ctx, "l", "month"); !ok || err != nil {
		t.Errorf("Load(month) = %v, %v; want found", ok, err)
	}

	// The atomic mode's record carries TAT − now + margin.
	g, _ := algorithm.NewGCRA(1, 9) // T = 1 s, capacity 10
	at := time.Now().UnixNano()
	if _, err := s.CheckGCRA(ctx, "l", "g", g, at, 3); err != nil {
		t.Fatal(err)
	}
	keys, _ := rdb.Keys(ctx, "*g:l:g").Result()
	if len(keys) != 1 {
		t.Fatalf("gcra record keys %v", keys)
	}
	if d := rdb.PTTL(ctx, keys[0]).Val(); d < 2950*time.Millisecond || d > 3051*time.Millisecond {
		t.Errorf("PTTL of the GCRA record after cost 3 at T = 1s: %v, want about 3s + 50ms", d)
	}
}

// TestAtomicTwoClients: two stores on two clients hammer one key at the
// same manual instants; together they admit exactly what algorithm.GCRA
// admits.
func TestAtomicTwoClients(t *testing.T) {
	rdbA, rdbB := newClient(t), newClient(t)
	pre := prefix(t, rdbA)
	sa := redisstore.New(rdbA, redisstore.Options{Prefix: pre})
	sb := redisstore.New(rdbB, redisstore.Options{Prefix: pre})
	g, _ := algorithm.NewGCRA(100, 19) // capacity 20, T = 10 ms
	storetest.SharedExact(t, []store.AtomicGCRA{sa, sb}, g, 6, 10, 5, 7)
}

// TestServerTime: with ServerTime, two clients hammering one key in real
// time never admit more than capacity + rate × elapsed.
func TestServerTime(t *testing.T) {
	rdbA, rdbB := newClient(t), newClient(t)
	pre := prefix(t, rdbA)
	sa := redisstore.New(rdbA, redisstore.Options{Prefix: pre, ServerTime: true})
	sb := redisstore.New(rdbB, redisstore.Options{Prefix: pre, ServerTime: true})
	g, _ := algorithm.NewGCRA(200, 9) // capacity 10, T = 5 ms
	storetest.ServerTimeBound(t, []store.AtomicGCRA{sa, sb}, g, 4, 300*time.Millisecond)
}

// TestSaturation: at the end of the int64 range the script saturates the
// TAT exactly as algorithm.GCRA does.
func TestSaturation(t *testing.T) {
	s, _ := newStore(t, redisstore.Options{})
	g, _ := algorithm.NewGCRA(1, 2)
	now := int64(math.MaxInt64 - 5)
	tat := g.Fresh(now)
	for i := range 4 {
		var want algorithm.Decision
		tat, want, _ = g.Step(tat, now, 1)
		got, err := s.CheckGCRA(t.Context(), "api", "sat", g, now, 1)
		if err != nil || got != want {
			t.Fatalf("check %d: %+v, %v; algorithm.GCRA says %+v", i, got, err, want)
		}
	}
}

// TestUnreachable: a closed port fails fast; a server that accepts and
// never answers fails within the context deadline. Neither is "no entry".
func TestUnreachable(t *testing.T) {
	closedAddr, silentAddr := faultproxy.ClosedAddr(t), faultproxy.Silent(t)
	for _, tc := range []struct {
		name, addr string
		deadline   time.Duration
	}{
		{"closed port", closedAddr, 2 * time.Second},
		{"silent server", silentAddr, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: tc.addr, ContextTimeoutEnabled: true, MaxRetries: -1, DialerRetries: 1})
			defer rdb.Close()
			s := redisstore.New(rdb, redisstore.Options{})
			storetest.Unreachable(t, s, tc.deadline, tc.deadline+500*time.Millisecond)
		})
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := redisstore.Open(ctx, "redis://"+closedAddr, redisstore.Options{}); err == nil {
		t.Error("Open of a closed port returned nil")
	}
}

func TestOpen(t *testing.T) {
	u := storeenv.URL(t, env, "redis://127.0.0.1:6379/0")
	s, err := redisstore.Open(t.Context(), u, redisstore.Options{Prefix: "fluxtest:" + storeenv.Suffix() + ":"})
	if err != nil {
		storeenv.Unreachable(t, env, err)
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
	if err := s.Client().Ping(t.Context()).Err(); !errors.Is(err, redis.ErrClosed) {
		t.Fatalf("the client Open made is still open after Close: %v", err)
	}
	if _, err := redisstore.Open(t.Context(), "not a url", redisstore.Options{}); err == nil {
		t.Fatal("Open of a bad URL returned nil")
	}
}
