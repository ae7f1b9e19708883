package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/internal/faultproxy"
	"github.com/fluxlimiter/flux/internal/storeenv"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/memstore"
)

func init() { redis.SetLogger(quietRedis{}) } // cut connections make go-redis log every dial

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func TestStoreConfigValidate(t *testing.T) {
	base := func() Config {
		c := DefaultConfig()
		c.Limiters = map[string]LimiterConfig{"api": {Rate: 1}}
		return c
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // "" means valid
	}{
		{"memory default", func(*Config) {}, ""},
		{"memory named", func(c *Config) { c.Store = "memory" }, ""},
		{"nats-kv through", func(c *Config) { c.Store, c.StoreWrite = "nats-kv", "through" }, ""},
		{"redis", func(c *Config) { c.Store, c.FlushInterval = "redis://127.0.0.1:6379/0", Duration(time.Second) }, ""},
		{"rediss", func(c *Config) { c.Store = "rediss://u:p@h:6379/0" }, ""},
		{"postgres", func(c *Config) { c.Store, c.StorePrefix = "postgres://postgres@127.0.0.1/test", "my_app" }, ""},
		{"postgresql", func(c *Config) { c.Store = "postgresql://h/db" }, ""},
		{"atomic redis", func(c *Config) {
			c.Store = "redis://h:1/0"
			c.Limiters["api"] = LimiterConfig{Rate: 1, LimiterStoreConfig: LimiterStoreConfig{StoreMode: "atomic", StoreFailure: "closed"}}
		}, ""},
		{"unknown store", func(c *Config) { c.Store = "mysql://h/db" }, "store (--store)"},
		{"store password redacted", func(c *Config) { c.Store = "mongodb://u:secret@h/db" }, "xxxxx"},
		{"bad write", func(c *Config) { c.Store, c.StoreWrite = "nats-kv", "sideways" }, "store_write"},
		{"negative flush", func(c *Config) { c.Store, c.FlushInterval = "nats-kv", -1 }, "flush_interval"},
		{"bad prefix", func(c *Config) { c.Store, c.StorePrefix = "nats-kv", "a:b" }, "NATS KV bucket"},
		{"redis prefix with colons", func(c *Config) { c.Store, c.StorePrefix = "redis://h:1/0", "app:v2:" }, ""},
		{"redis prefix with a space", func(c *Config) { c.Store, c.StorePrefix = "redis://h:1/0", "a b" }, "Redis key prefix"},
		{"postgres schema with a colon", func(c *Config) { c.Store, c.StorePrefix = "postgres://h/db", "a:" }, "PostgreSQL schema"},
		{"write without store", func(c *Config) { c.StoreWrite = "through" }, "need a store"},
		{"bad failure", func(c *Config) {
			c.Store = "nats-kv"
			c.Limiters["api"] = LimiterConfig{Rate: 1, LimiterStoreConfig: LimiterStoreConfig{StoreFailure: "maybe"}}
		}, "store_failure"},
		{"bad mode", func(c *Config) {
			c.Store = "nats-kv"
			c.Limiters["api"] = LimiterConfig{Rate: 1, LimiterStoreConfig: LimiterStoreConfig{StoreMode: "sharded"}}
		}, "store_mode"},
		{"atomic in memory", func(c *Config) {
			c.Limiters["api"] = LimiterConfig{Rate: 1, LimiterStoreConfig: LimiterStoreConfig{StoreMode: "atomic"}}
		}, "atomic needs a store"},
		{"atomic window", func(c *Config) {
			c.Store = "redis://h:1/0"
			c.Limiters["api"] = LimiterConfig{Algorithm: "fixed-window", Limit: 5, Window: Duration(time.Second), LimiterStoreConfig: LimiterStoreConfig{StoreMode: "atomic"}}
		}, "gcra only"},
		{"atomic clustered", func(c *Config) {
			c.Store = "redis://h:1/0"
			c.Limiters["api"] = LimiterConfig{Rate: 1, LimiterClusterConfig: LimiterClusterConfig{Mode: "strict"}, LimiterStoreConfig: LimiterStoreConfig{StoreMode: "atomic"}}
		}, "leave mode local"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v; want one mentioning %q", err, tc.want)
			}
			if strings.Contains(fmt.Sprint(err), "secret") {
				t.Fatalf("the error shows a password: %v", err)
			}
		})
	}
	c, err := ParseConfig([]byte("store: nats-kv\nstore_write: through\nflush_interval: 250ms\nstore_timeout: 20ms\nstore_prefix: app\n" +
		"limiters:\n  api: {rate: 5, store_failure: open}\n  shared: {rate: 5, store_mode: atomic}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store != "nats-kv" || c.StoreWrite != "through" || c.FlushInterval != Duration(250*time.Millisecond) || c.StoreTimeout != Duration(20*time.Millisecond) ||
		c.StorePrefix != "app" || c.Limiters["api"].StoreFailure != "open" || c.Limiters["shared"].StoreMode != "atomic" {
		t.Fatalf("parsed %+v", c)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A store that does not answer at start is a clear startup error.
func TestStoreConnectFailure(t *testing.T) {
	for _, store := range []string{"redis://" + closedAddr(t) + "/0", "postgres://postgres@" + closedAddr(t) + "/test?connect_timeout=2"} {
		cfg := testConfig(t)
		cfg.Store = store
		n, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = n.Start(t.Context())
		n.Shutdown(context.Background())
		if err == nil || !strings.Contains(err.Error(), "--store") || !strings.Contains(err.Error(), "connect to the store") {
			t.Fatalf("start with %s: %v; want an error naming --store", store, err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("start with %s took %v to fail", store, el)
		}
	}
}

// redisStoreURL returns the test server's URL with its host replaced by
// via (a proxy) if set, and a prefix for this test, whose keys are deleted
// at cleanup.
func redisStoreURL(t *testing.T, via string) (string, string) {
	u := storeenv.RedisURL(t)
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		storeenv.Unreachable(t, storeenv.Redis, err)
	}
	prefix := "fluxtest_" + storeenv.Suffix()
	t.Cleanup(func() {
		defer rdb.Close()
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	})
	if via != "" {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		pu.Host = via
		u = pu.String()
	}
	return u, prefix
}

// postgresStoreURL returns the test server's URL and a schema for this
// test, dropped at cleanup.
func postgresStoreURL(t *testing.T) (string, string) {
	u := storeenv.PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, u)
	if err == nil {
		if err = pool.Ping(ctx); err != nil {
			pool.Close()
		}
	}
	if err != nil {
		storeenv.Unreachable(t, storeenv.Postgres, err)
	}
	schema := "fluxtest_" + storeenv.Suffix()
	t.Cleanup(func() {
		defer pool.Close()
		if _, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	return u, schema
}

func httpGetBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue returns the value of the first sample of /metrics whose
// line starts with prefix (-1 if none).
func metricValue(body, prefix string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				return v
			}
		}
	}
	return -1
}

// A node on Redis through a proxy: /readyz follows the store, decisions go
// on while it is down (by the limiter's policy), store errors are counted
// in /metrics, and once it is back the node is ready and saves again.
func TestStoreReadinessAndMetrics(t *testing.T) {
	u, _ := redisStoreURL(t, "")
	ru, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	proxy := faultproxy.Start(t, ru.Addr)
	u, prefix := redisStoreURL(t, proxy.Addr())
	cfg := testConfig(t)
	cfg.Store, cfg.StorePrefix, cfg.FlushInterval = u, prefix, Duration(20*time.Millisecond)
	cfg.Limiters = map[string]LimiterConfig{
		"open":   {Rate: 1, Burst: 4, LimiterStoreConfig: LimiterStoreConfig{StoreFailure: "open"}},
		"atomic": {Rate: 1, Burst: 4, LimiterStoreConfig: LimiterStoreConfig{StoreMode: "atomic"}},
	}
	n := startNode(t, cfg)
	c := client.New(connect(t, n))
	base := "http://" + n.HTTPAddr()
	if code, body := httpGetBody(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz with the store up: %d %s", code, body)
	}
	for _, lim := range []string{"open", "atomic"} {
		if d, err := c.Check(t.Context(), lim, "alice", 1); err != nil || !d.Allowed || d.Remaining != 4 {
			t.Fatalf("%s with the store up: %+v %v", lim, d, err)
		}
	}
	proxy.Refuse()
	if code, body := httpGetBody(t, base+"/readyz"); code != 503 || !strings.Contains(body, "store") {
		t.Fatalf("/readyz with the store down: %d %q; want 503 naming the store", code, body)
	}
	for range 3 {
		start := time.Now()
		d, err := c.Check(t.Context(), "open", "bob", 1)
		if err != nil || !d.Allowed {
			t.Fatalf("open policy with the store down: %+v %v", d, err)
		}
		d, err = c.Check(t.Context(), "atomic", "carol", 1) // local: never checked, denied
		if err != nil || d.Allowed {
			t.Fatalf("atomic limiter, local policy, unknown key, store down: %+v %v", d, err)
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("two checks with the store down took %v", el)
		}
	}
	_, body := httpGetBody(t, base+"/metrics")
	for _, m := range []string{
		`flux_store_fallbacks_total{limiter="open"}`,
		`flux_store_load_errors_total{limiter="atomic"}`,
	} {
		if v := metricValue(body, m); v < 1 {
			t.Errorf("%s = %v with the store down; want ≥ 1", m, v)
		}
	}
	// The cache-mode limiter learns the store is down from a failed load,
	// or from a failed background save just before it (it then takes the
	// policy without trying a load for a flush interval): either way the
	// failure is counted.
	failures := 0.0
	for _, op := range []string{"load", "save"} {
		for _, res := range []string{"error", "timeout"} {
			failures += max(0, metricValue(body, `flux_store_operations_total{limiter="open",op="`+op+`",result="`+res+`"}`))
		}
	}
	failures += max(0, metricValue(body, `flux_store_load_errors_total{limiter="open"}`))
	failures += max(0, metricValue(body, `flux_store_save_errors_total{limiter="open"}`))
	if failures < 1 {
		t.Errorf("no failed store operation counted for the open limiter with the store down")
	}
	if v := metricValue(body, `flux_store_operations_total{limiter="atomic",op="check",result="ok"}`); v < 1 {
		t.Errorf("atomic checks not counted: %v", v)
	}
	proxy.Restore()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := httpGetBody(t, base+"/readyz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz not ready after the store came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		if _, body := httpGetBody(t, base+"/metrics"); metricValue(body, `flux_store_operations_total{limiter="open",op="save",result="ok"}`) >= 1 &&
			metricValue(body, `flux_store_dirty_keys{limiter="open"}`) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the node did not save once the store was back")
		}
		c.Check(t.Context(), "open", "dave", 1)
		time.Sleep(20 * time.Millisecond)
	}
}

// A node restarted on the same nats-kv store (the embedded server's
// JetStream in the same data dir) still throttles what it throttled; the
// other backends' restarts run through the binary (cmd/flux-node).
func TestStoreRestartNATSKV(t *testing.T) {
	for _, write := range []string{WriteBehind, WriteThrough} {
		t.Run(write, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Store, cfg.StoreWrite, cfg.FlushInterval = StoreNATSKV, write, Duration(time.Hour)
			cfg.Limiters = map[string]LimiterConfig{"api": {Rate: 0.01, Burst: 4}}
			n, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Start(t.Context()); err != nil {
				n.Shutdown(context.Background())
				t.Fatal(err)
			}
			c := client.New(connect(t, n))
			for i := range 6 {
				d, err := c.Check(t.Context(), "api", "alice", 1)
				if err != nil || d.Allowed != (i < 5) {
					t.Fatalf("check %d: %+v %v", i, d, err)
				}
			}
			if d, err := c.Check(t.Context(), "api", "bob", 2); err != nil || !d.Allowed {
				t.Fatalf("bob: %+v %v", d, err)
			}
			if err := n.Shutdown(t.Context()); err != nil { // saves, then stops the server
				t.Fatal(err)
			}
			m := startNode(t, cfg)
			c = client.New(connect(t, m))
			if d, err := c.Check(t.Context(), "api", "alice", 1); err != nil || d.Allowed {
				t.Fatalf("alice after a restart: %+v %v; want still denied", d, err)
			}
			if d, err := c.Check(t.Context(), "api", "bob", 0); err != nil || d.Remaining != 3 {
				t.Fatalf("bob after a restart: %+v %v; want 3 left", d, err)
			}
		})
	}
}

// Two nodes with store_mode atomic on one Redis, and two on one
// PostgreSQL, hammered at once through NATS: together they admit exactly
// the capacity of each key (the limit refills one request per 1000 s).
// The store decides every check: a generous store_timeout and the closed
// policy keep the failure policy out of it (under the default 50 ms,
// PostgreSQL's row lock and WAL flush per admission can time out on a
// loaded machine, and local then decides from each node's own memory).
func TestAtomicTwoNodes(t *testing.T) {
	for _, backend := range []string{"redis", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var u, prefix string
			if backend == "redis" {
				u, prefix = redisStoreURL(t, "")
			} else {
				u, prefix = postgresStoreURL(t)
			}
			var clients []*client.Client
			for range 2 {
				cfg := testConfig(t)
				cfg.Store, cfg.StorePrefix, cfg.StoreTimeout = u, prefix, Duration(10*time.Second)
				cfg.Limiters = map[string]LimiterConfig{"shared": {Rate: 0.001, Burst: 9,
					LimiterStoreConfig: LimiterStoreConfig{StoreMode: ModeAtomic, StoreFailure: "closed"}}}
				clients = append(clients, client.New(connect(t, startNode(t, cfg))))
			}
			const keys = 5
			var admitted [keys]atomic.Int64
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					c := clients[g%2]
					for i := range 40 {
						k := (g + i) % keys
						if i%5 == 0 {
							res, err := c.CheckBatch(context.Background(), []client.Request{
								{Limiter: "shared", Key: fmt.Sprint(k), Cost: 1}, {Limiter: "shared", Key: fmt.Sprint(k), Cost: 1},
							})
							if err != nil {
								t.Error(err)
								return
							}
							for _, r := range res {
								if r.Err != nil {
									t.Error(r.Err)
								} else if r.Decision.Allowed {
									admitted[k].Add(1)
								}
							}
							continue
						}
						d, err := c.Check(context.Background(), "shared", fmt.Sprint(k), 1)
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
					t.Errorf("key %d: the two nodes admitted %d together; want exactly the capacity, 10", k, n)
				}
			}
		})
	}
}

// plainStore is a store.Store with no optional capability.
type plainStore struct{ store.Store }

// pipelined adds AtomicGCRABatch to a store that has the others.
type pipelined struct{ *memstore.Store }

func (pipelined) CheckGCRABatch(context.Context, string, algorithm.GCRA, int64, []string, []int64, []algorithm.Decision, []error) error {
	return nil
}

// A limiter's view of the store claims exactly the capabilities the
// backend has, whatever its name.
func TestWrapStoreCapabilities(t *testing.T) {
	mem := memstore.New(memstore.Options{})
	defer mem.Close()
	for _, c := range []struct {
		name                       string
		s                          store.Store
		batch, atomic, pipelinedOK bool
	}{
		{"plain", plainStore{mem}, false, false, false},
		{"memstore", mem, true, true, false},
		{"pipelined", pipelined{mem}, true, true, true},
	} {
		w := wrapStore(c.s, nil, "api")
		_, batch := w.(store.BatchLoader)
		_, atomic := w.(store.AtomicGCRA)
		_, pip := w.(store.AtomicGCRABatch)
		if batch != c.batch || atomic != c.atomic || pip != c.pipelinedOK {
			t.Errorf("%s: wrapper claims BatchLoader=%v AtomicGCRA=%v AtomicGCRABatch=%v, want %v %v %v",
				c.name, batch, atomic, pip, c.batch, c.atomic, c.pipelinedOK)
		}
		// It forwards: a saved entry loads back.
		ctx := t.Context()
		if err := w.Save(ctx, "api/"+c.name, []store.Entry{{Key: "k", State: []byte{42}, IdleAt: store.NoExpiry}}); err != nil {
			t.Fatal(err)
		}
		if e, found, err := w.Load(ctx, "api/"+c.name, "k"); err != nil || !found || string(e.State) != "\x2a" {
			t.Fatalf("%s: Load = %+v, %v, %v", c.name, e, found, err)
		}
	}
}
