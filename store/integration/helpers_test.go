package integration

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/internal/storeenv"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/natskv"
	"github.com/fluxlimiter/flux/store/pgstore"
	"github.com/fluxlimiter/flux/store/redisstore"
)

func TestMain(m *testing.M) {
	redis.SetLogger(quiet{}) // cut connections make go-redis log every dial
	goleak.VerifyTestMain(m)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

var t0 = time.Unix(1_700_000_000, 0)

// backend opens stores on one test's private namespace of a real server.
type backend struct {
	name string
	// addr is the server's host:port, for a proxy in front of it.
	addr string
	// open returns a new store with its own client, through via (a
	// host:port) if set, closed at cleanup. Stores opened by one backend
	// share their data.
	open func(tb testing.TB, via string, clk clock.Clock) store.Store
	// atomic: the backend decides GCRA in one round trip (Redis, PostgreSQL).
	atomic bool
}

// backends returns the backends this run can reach: NATS always, Redis and
// PostgreSQL when their variables are set (see storeenv).
func backends(t *testing.T) []backend {
	bs := []backend{natsBackend(t)}
	for _, f := range []func(testing.TB) (backend, bool){redisBackend, postgresBackend} {
		if b, ok := f(t); ok {
			bs = append(bs, b)
		}
	}
	return bs
}

// each runs f for every reachable backend, as subtests.
func each(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

func redisBackend(t testing.TB) (backend, bool) {
	u := storeenv.Optional(t, storeenv.Redis, storeenv.ExampleRedis)
	if u == "" {
		return backend{}, false
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("%s: %v", storeenv.Redis, err)
	}
	admin := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := admin.Ping(ctx).Err(); err != nil {
		admin.Close()
		storeenv.OptionalUnreachable(t, storeenv.Redis, err)
		return backend{}, false
	}
	prefix := "fluxtest:" + storeenv.Suffix() + ":"
	t.Cleanup(func() {
		defer admin.Close()
		ctx := context.Background()
		iter := admin.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for lo := 0; lo < len(keys); lo += 1000 {
			admin.Del(ctx, keys[lo:min(lo+1000, len(keys))]...)
		}
	})
	return backend{name: "redis", addr: opts.Addr, atomic: true, open: func(tb testing.TB, via string, clk clock.Clock) store.Store {
		o := *opts
		if via != "" {
			o.Addr = via
		}
		o.ContextTimeoutEnabled = true
		o.DialerRetries = 1
		o.PoolSize = 64
		rdb := redis.NewClient(&o)
		s := redisstore.New(rdb, redisstore.Options{Prefix: prefix, Clock: clk})
		tb.Cleanup(func() { s.Close(); rdb.Close() })
		return s
	}}, true
}

func postgresBackend(t testing.TB) (backend, bool) {
	u := storeenv.Optional(t, storeenv.Postgres, storeenv.ExamplePostgres)
	if u == "" {
		return backend{}, false
	}
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		t.Fatalf("%s: %v", storeenv.Postgres, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	admin, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = admin.Ping(ctx)
		if err != nil {
			admin.Close()
		}
	}
	if err != nil {
		storeenv.OptionalUnreachable(t, storeenv.Postgres, err)
		return backend{}, false
	}
	schema := "fluxtest_" + storeenv.Suffix()
	t.Cleanup(func() {
		defer admin.Close()
		if _, err := admin.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	addr := net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	return backend{name: "postgres", addr: addr, atomic: true, open: func(tb testing.TB, via string, clk clock.Clock) store.Store {
		c := cfg.Copy()
		c.MaxConns = 16
		if via != "" {
			host, port, _ := net.SplitHostPort(via)
			p, _ := strconv.Atoi(port)
			c.ConnConfig.Host, c.ConnConfig.Port = host, uint16(p)
			c.ConnConfig.Fallbacks = nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pool, err := pgxpool.NewWithConfig(ctx, c)
		if err != nil {
			tb.Fatal(err)
		}
		s, err := pgstore.New(ctx, pool, pgstore.Options{Schema: schema, Clock: clk, CleanupInterval: -1})
		if err != nil {
			pool.Close()
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close(); pool.Close() })
		return s
	}}, true
}

func natsBackend(t testing.TB) backend {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	bucket := "fluxtest_" + storeenv.Suffix()
	addr := srv.Addr().String()
	return backend{name: "nats-kv", addr: addr, open: func(tb testing.TB, via string, clk clock.Clock) store.Store {
		a := addr
		if via != "" {
			a = via
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := natskv.Open(ctx, "nats://"+a, natskv.Options{Bucket: bucket, Clock: clk},
			nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.Timeout(time.Second))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close() })
		return s
	}}
}
