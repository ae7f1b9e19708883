package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fluxlimiter/flux/node"
)

// storeFlags defines the store's flags (node/store.go, docs/STORES.md).
func storeFlags(fs *flag.FlagSet, str func(name, usage string, set func(*node.Config, string)), ovs *[]override) {
	dur := func(name, usage string, set func(*node.Config, node.Duration)) {
		fs.Func(name, usage, func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return err
			}
			*ovs = append(*ovs, func(c *node.Config) error { set(c, node.Duration(d)); return nil })
			return nil
		})
	}
	str("store", "where limiters keep their state across restarts: `STORE` is memory (the default: nowhere), nats-kv (JetStream KV on the node's NATS), redis://HOST:PORT/DB or postgres://USER@HOST:PORT/DB",
		func(c *node.Config, v string) { c.Store = v })
	str("store-write", "`MODE` of saving to the store: behind (every --flush-interval; a crash loses at most one interval) or through (before answering; a crash loses nothing admitted) (default behind)",
		func(c *node.Config, v string) { c.StoreWrite = v })
	dur("flush-interval", "`DURATION` between write-behind saves, and how often a store that is down is probed (default 100ms)",
		func(c *node.Config, v node.Duration) { c.FlushInterval = v })
	dur("store-timeout", "`DURATION` a decision waits for the store before its limiter's store_failure policy decides (default 50ms)",
		func(c *node.Config, v node.Duration) { c.StoreTimeout = v })
	str("store-prefix", "`NAME` of this deployment's data in the store: Redis key prefix, PostgreSQL schema or NATS KV bucket (default "+node.DefaultStorePrefix+")",
		func(c *node.Config, v string) { c.StorePrefix = v })
}

// routeRedisLogs sends go-redis's own messages (a line per failed dial
// while Redis is down) to the node's log at debug level instead of
// stderr: the store's failures are already counted in /metrics. go-redis
// has one global logger: the first serve's is kept (tests run serve many
// times in one process).
func routeRedisLogs(log *slog.Logger) {
	redisLogOnce.Do(func() { redis.SetLogger(redisLog{log.With("component", "go-redis")}) })
}

var redisLogOnce sync.Once

type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.l.DebugContext(ctx, fmt.Sprintf(format, v...))
}
