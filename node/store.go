package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxlimiter/flux/failure"

	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/cluster"
	"github.com/fluxlimiter/flux/metrics"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/natskv"
	"github.com/fluxlimiter/flux/store/pgstore"
	"github.com/fluxlimiter/flux/store/redisstore"
)

// This file connects the node's limiters to a store (docs/STORES.md): the
// configuration, the connection made at Start, readiness, the order of
// shutdown (limiters flush before the store closes) and the store
// metrics.

// Store settings: the values of store (--store) that are not URLs, of
// store_write (--store-write) and of a limiter's store_mode and
// store_failure.
const (
	StoreMemory  = "memory"  // no store: state lives and dies with the process
	StoreNATSKV  = "nats-kv" // a JetStream KV bucket on the node's NATS
	WriteBehind  = "behind"  // dirty keys saved every flush_interval
	WriteThrough = "through" // a decision is answered once its state is saved
	ModeCache    = "cache"   // the limiter decides; the store keeps its state
	ModeAtomic   = "atomic"  // the store decides (GCRA in Redis or PostgreSQL)
)

// DefaultStorePrefix names a node's data in its store unless store_prefix
// says otherwise: the Redis key prefix "flux:", the PostgreSQL schema
// "flux", the NATS KV bucket "flux".
const DefaultStorePrefix = "flux"

// DefaultConnectTimeout bounds the connection to the store at Start.
const DefaultConnectTimeout = 10 * time.Second

// StoreConfig is where a node keeps its limiters' state. Its fields are
// settings of Config (flat YAML keys, like the flags).
type StoreConfig struct {
	// Store is memory (the default: a restart forgives every key),
	// nats-kv (a JetStream KV bucket on the node's NATS: the embedded
	// server's, kept in DataDir, or the NATSURL deployment's), a Redis URL
	// (redis://, rediss://, unix://) or a PostgreSQL URL (postgres://,
	// postgresql://) (--store).
	Store string `yaml:"store"`
	// StoreWrite is behind (the default: dirty keys are saved every
	// FlushInterval; a crash loses at most that much) or through (a
	// decision that admitted something is answered once its state is
	// saved; a crash loses nothing admitted) (--store-write).
	StoreWrite string `yaml:"store_write"`
	// FlushInterval is the write-behind period, and how often a store
	// that is down is probed (--flush-interval;
	// shard.DefaultFlushEvery, 100ms, when zero).
	FlushInterval Duration `yaml:"flush_interval"`
	// StoreTimeout bounds every store call a decision waits for
	// (--store-timeout; shard.DefaultStoreTimeout, 50ms, when zero).
	StoreTimeout Duration `yaml:"store_timeout"`
	// StorePrefix names this deployment's data in the store
	// (--store-prefix; DefaultStorePrefix when empty): the Redis key
	// prefix (with ":" appended unless it ends in one), the PostgreSQL
	// schema or the NATS KV bucket. 1 to 64 of A-Z a-z 0-9 _ -, and for
	// Redis also : and . (a Redis key prefix is idiomatically "app:").
	StorePrefix string `yaml:"store_prefix"`
}

// LimiterStoreConfig is how one limiter uses the node's store: the store
// settings of LimiterConfig.
type LimiterStoreConfig struct {
	// StoreMode is cache (the default: the limiter decides, the store
	// keeps its state across restarts) or atomic (gcra only, Redis,
	// PostgreSQL or nats-kv: every check is decided inside the store, so
	// that every node and program using the store shares one exact limit).
	StoreMode string `yaml:"store_mode"`
	// StoreFailure is what the limiter decides when the store fails or
	// does not answer within StoreTimeout: local (the default: from this
	// node's memory, denying keys it has not loaded since it started),
	// open (admit) or closed (deny).
	StoreFailure string `yaml:"store_failure"`
}

// storeKind is the backend a store setting names: memory, nats-kv, redis
// or postgres ("" if none of them).
func storeKind(s string) string {
	switch s {
	case "", StoreMemory:
		return StoreMemory
	case StoreNATSKV:
		return StoreNATSKV
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
		return "redis"
	case "postgres", "postgresql":
		return "postgres"
	}
	return ""
}

// redactURL hides a URL's password, for logs and errors.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s
}

// storePrefixRE is the store_prefix a PostgreSQL schema or a NATS KV
// bucket can be named (KV bucket names allow no more than this);
// redisPrefixRE adds the separators idiomatic in Redis key prefixes.
var (
	storePrefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	redisPrefixRE = regexp.MustCompile(`^[A-Za-z0-9_:.-]{1,64}$`)
)

// redisPrefix is the Redis key prefix store_prefix names: "flux" and
// "flux:" both start keys with "flux:".
func (c StoreConfig) redisPrefix() string {
	p := c.prefix()
	if strings.HasSuffix(p, ":") {
		return p
	}
	return p + ":"
}

func (c StoreConfig) prefix() string {
	if c.StorePrefix == "" {
		return DefaultStorePrefix
	}
	return c.StorePrefix
}

// failurePolicy parses store_failure.
func failurePolicy(s string) (failure.Policy, bool) {
	switch s {
	case "", "local":
		return failure.Local, true
	case "open":
		return failure.Open, true
	case "closed":
		return failure.Closed, true
	}
	return 0, false
}

// validateStore reports the problems of the store settings.
func (c Config) validateStore() []error {
	var problems []error
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...)))
	}
	kind := storeKind(c.Store)
	if kind == "" {
		bad("store (--store) %q: want memory, nats-kv, redis://HOST:PORT/DB or postgres://USER@HOST:PORT/DB", redactURL(c.Store))
	}
	switch c.StoreWrite {
	case "", WriteBehind, WriteThrough:
	default:
		bad("store_write (--store-write) %q: want behind or through", c.StoreWrite)
	}
	if c.FlushInterval < 0 || c.StoreTimeout < 0 {
		bad("flush_interval (--flush-interval) %v and store_timeout (--store-timeout) %v must not be negative", c.FlushInterval, c.StoreTimeout)
	}
	switch {
	case c.StorePrefix == "" || kind == StoreMemory || kind == "":
	case kind == "redis":
		if !redisPrefixRE.MatchString(c.StorePrefix) {
			bad("store_prefix (--store-prefix) %q: a Redis key prefix is 1 to 64 of A-Z a-z 0-9 _ - : .", c.StorePrefix)
		}
	case !storePrefixRE.MatchString(c.StorePrefix):
		what := "PostgreSQL schema"
		if kind == StoreNATSKV {
			what = "NATS KV bucket"
		}
		bad("store_prefix (--store-prefix) %q: a %s is 1 to 64 of A-Z a-z 0-9 _ - (a : or . is for Redis key prefixes only)", c.StorePrefix, what)
	}
	if kind == StoreMemory && (c.StoreWrite != "" || c.FlushInterval != 0 || c.StoreTimeout != 0 || c.StorePrefix != "") {
		bad("store_write, flush_interval, store_timeout and store_prefix need a store (--store nats-kv, redis://... or postgres://...)")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Limiters)) {
		lc := c.Limiters[name]
		if _, ok := failurePolicy(lc.StoreFailure); !ok {
			bad("limiter %q: store_failure %q: want local, open or closed", name, lc.StoreFailure)
		}
		switch lc.StoreMode {
		case "", ModeCache:
		case ModeAtomic:
			if kind == StoreMemory {
				bad("limiter %q: store_mode atomic needs a store (--store redis://..., postgres://... or nats-kv)", name)
			}
			if lc.AlgorithmName() != string(flux.GCRA) {
				bad("limiter %q: store_mode atomic supports gcra only, not %s", name, lc.AlgorithmName())
			}
			if m, err := cluster.ParseMode(lc.Mode); err == nil && m != cluster.Local {
				bad("limiter %q: store_mode atomic already shares one exact limit through the store: leave mode local", name)
			}
		default:
			bad("limiter %q: store_mode %q: want cache or atomic", name, lc.StoreMode)
		}
		if kind == StoreMemory && lc.StoreFailure != "" {
			bad("limiter %q: store_failure needs a store (--store)", name)
		}
	}
	return problems
}

// errStoreNotConnected: a limiter with a store cannot be made before
// Start connects the store.
var errStoreNotConnected = errors.New("flux-node: the store is not connected yet (Start connects it)")

// nodeStore is the node's store. It is connected by Start (nats-kv needs
// the node's NATS) before the limiters that use it are made, so that each
// limiter's view of it has the capabilities the backend has.
type nodeStore struct {
	kind string
	cur  atomic.Pointer[storeBox]

	closeOnce sync.Once
}

type storeBox struct{ s store.Store }

// newNodeStore returns the handle for cfg's store, nil for memory.
func newNodeStore(cfg Config) *nodeStore {
	if k := storeKind(cfg.Store); k != StoreMemory {
		return &nodeStore{kind: k}
	}
	return nil
}

func (h *nodeStore) get() (store.Store, error) {
	if b := h.cur.Load(); b != nil {
		return b.s, nil
	}
	return nil, errStoreNotConnected
}

// storeOptions are the options connecting the limiter name to the node's
// store (none without a store). Its namespace in the store is
// "<name>/<algorithm>": a limiter whose algorithm changes starts afresh
// (as on reload) instead of reading states it cannot decode. The store
// must be connected: the limiter's view of it has the capabilities the
// backend has.
func (n *Node) storeOptions(name string, lc LimiterConfig) ([]flux.Option, error) {
	if n.st == nil {
		return nil, nil
	}
	s, err := n.st.get()
	if err != nil {
		return nil, err
	}
	policy, _ := failurePolicy(lc.StoreFailure) // validated
	ns := name + "/" + lc.AlgorithmName()
	ls := wrapStore(s, n.met, name)
	cfg := n.cfg.StoreConfig
	if lc.StoreMode == ModeAtomic {
		if _, ok := ls.(store.AtomicGCRA); !ok {
			return nil, fmt.Errorf("%w: limiter %q: store_mode atomic: the store %s cannot decide checks", ErrInvalidConfig, name, n.st.kind)
		}
		return []flux.Option{flux.WithStore(flux.StoreConfig{
			Store: ls, Limiter: ns, Mode: flux.StoreAtomic, Timeout: time.Duration(cfg.StoreTimeout), OnFailure: policy,
			Backoff: time.Duration(cfg.FlushInterval),
		})}, nil
	}
	mode := flux.StoreWriteBehind
	if cfg.StoreWrite == WriteThrough {
		mode = flux.StoreWriteThrough
	}
	return []flux.Option{flux.WithStore(flux.StoreConfig{
		Store: ls, Limiter: ns, Mode: mode,
		FlushEvery: time.Duration(cfg.FlushInterval), Timeout: time.Duration(cfg.StoreTimeout), OnFailure: policy,
	})}, nil
}

// connectStore opens the configured store; Start calls it once NATS is
// connected and before the service answers. A failure is a startup error.
func (n *Node) connectStore(ctx context.Context, cfg Config) error {
	if n.st == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultConnectTimeout)
	defer cancel()
	var (
		s   store.Store
		err error
	)
	what := redactURL(cfg.Store)
	switch n.st.kind {
	case "redis":
		s, err = redisstore.Open(ctx, cfg.Store, redisstore.Options{Prefix: cfg.redisPrefix()})
	case "postgres":
		s, err = pgstore.Open(ctx, cfg.Store, pgstore.Options{Schema: cfg.prefix()})
	case StoreNATSKV:
		what = "nats-kv on " + n.clientURL
		var opts []nats.Option
		if opts, err = n.nodeAuthOptions(cfg); err == nil {
			opts = append(opts, nats.Name("flux-node "+cfg.NodeID+" store"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
			s, err = natskv.Open(ctx, n.clientURL, natskv.Options{Bucket: cfg.prefix()}, opts...)
		}
	}
	if err != nil {
		return fmt.Errorf("flux-node: connect to the store %s (--store): %w", what, err)
	}
	n.st.cur.Store(&storeBox{s})
	n.log.Info("store connected", "store", what, "write", cmp.Or(cfg.StoreWrite, WriteBehind), "prefix", cfg.prefix())
	return nil
}

// storeReady reports whether the store answers (nil without a store).
func (n *Node) storeReady() error {
	if n.st == nil {
		return nil
	}
	s, err := n.st.get()
	if err != nil {
		return err
	}
	p, ok := s.(store.Pinger)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.Ping(ctx); err != nil {
		return fmt.Errorf("store not answering: %w", err)
	}
	return nil
}

// closeLimiters closes every limiter, which saves what is dirty, and then
// the store. Shutdown calls it once the service has drained, before the
// embedded NATS server (which may hold the store) stops.
func (n *Node) closeLimiters() {
	for _, e := range n.limiters.Load().byName {
		e.lim.Close()
		n.met.Untrack(e.name)
	}
	n.closeStore()
}

// closeStore closes the store, once.
func (n *Node) closeStore() {
	if n.st == nil {
		return
	}
	n.st.closeOnce.Do(func() {
		if s, err := n.st.get(); err == nil {
			if err := s.Close(); err != nil {
				n.log.Warn("closing the store", "error", err)
			}
		}
	})
}

// limiterStore is one limiter's view of the node's connected store: it
// counts every operation in flux_store_operations_total and
// flux_store_duration_seconds under the limiter's name. Alone it is a
// plain store.Store; wrapStore adds exactly the optional capabilities the
// backend has, so the limiter finds by type assertion what the store can
// do, never more.
type limiterStore struct {
	s    store.Store
	met  *metrics.Metrics
	name string
}

// wrapStore returns limiter name's view of s, with s's capabilities among
// store.BatchLoader, store.AtomicGCRA and store.AtomicGCRABatch.
func wrapStore(s store.Store, met *metrics.Metrics, name string) store.Store {
	ls := &limiterStore{s: s, met: met, name: name}
	_, batch := s.(store.BatchLoader)
	_, atomic := s.(store.AtomicGCRA)
	_, pipelined := s.(store.AtomicGCRABatch)
	switch {
	case batch && atomic && pipelined:
		return loaderPipelinedStore{ls}
	case batch && atomic:
		return loaderAtomicStore{ls}
	case batch:
		return loaderStore{ls}
	case atomic && pipelined:
		return pipelinedStore{ls}
	case atomic:
		return atomicStore{ls}
	}
	return ls
}

// The capability sets wrapStore picks from.
type (
	loaderStore          struct{ *limiterStore }
	atomicStore          struct{ *limiterStore }
	pipelinedStore       struct{ *limiterStore }
	loaderAtomicStore    struct{ *limiterStore }
	loaderPipelinedStore struct{ *limiterStore }
)

func (w loaderStore) LoadMany(ctx context.Context, limiter string, keys []string, out []store.Entry, found []bool) error {
	return w.loadMany(ctx, limiter, keys, out, found)
}
func (w atomicStore) CheckGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error) {
	return w.checkGCRA(ctx, limiter, key, g, now, cost)
}
func (w pipelinedStore) CheckGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error) {
	return w.checkGCRA(ctx, limiter, key, g, now, cost)
}
func (w pipelinedStore) CheckGCRABatch(ctx context.Context, limiter string, g algorithm.GCRA, now int64, keys []string, costs []int64, out []algorithm.Decision, errs []error) error {
	return w.checkGCRABatch(ctx, limiter, g, now, keys, costs, out, errs)
}
func (w loaderAtomicStore) LoadMany(ctx context.Context, limiter string, keys []string, out []store.Entry, found []bool) error {
	return w.loadMany(ctx, limiter, keys, out, found)
}
func (w loaderAtomicStore) CheckGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error) {
	return w.checkGCRA(ctx, limiter, key, g, now, cost)
}
func (w loaderPipelinedStore) LoadMany(ctx context.Context, limiter string, keys []string, out []store.Entry, found []bool) error {
	return w.loadMany(ctx, limiter, keys, out, found)
}
func (w loaderPipelinedStore) CheckGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error) {
	return w.checkGCRA(ctx, limiter, key, g, now, cost)
}
func (w loaderPipelinedStore) CheckGCRABatch(ctx context.Context, limiter string, g algorithm.GCRA, now int64, keys []string, costs []int64, out []algorithm.Decision, errs []error) error {
	return w.checkGCRABatch(ctx, limiter, g, now, keys, costs, out, errs)
}

// observe records one operation that started at start.
func (ls *limiterStore) observe(op string, start time.Time, found bool, err error) {
	result := "ok"
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		result = "timeout"
	case err != nil:
		result = "error"
	case !found:
		result = "miss"
	}
	ls.met.Store(ls.name, op, result)
	ls.met.ObserveStore(ls.name, op, time.Since(start))
}

func (ls *limiterStore) Load(ctx context.Context, limiter, key string) (store.Entry, bool, error) {
	start := time.Now()
	e, found, err := ls.s.Load(ctx, limiter, key)
	ls.observe("load", start, found, err)
	return e, found, err
}

func (ls *limiterStore) loadMany(ctx context.Context, limiter string, keys []string, out []store.Entry, found []bool) error {
	start := time.Now()
	err := ls.s.(store.BatchLoader).LoadMany(ctx, limiter, keys, out, found)
	ls.observe("load", start, true, err)
	return err
}

func (ls *limiterStore) Save(ctx context.Context, limiter string, entries []store.Entry) error {
	start := time.Now()
	err := ls.s.Save(ctx, limiter, entries)
	ls.observe("save", start, true, err)
	return err
}

func (ls *limiterStore) Delete(ctx context.Context, limiter string, keys []string) error {
	start := time.Now()
	err := ls.s.Delete(ctx, limiter, keys)
	ls.observe("delete", start, true, err)
	return err
}

func (ls *limiterStore) checkGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error) {
	start := time.Now()
	d, err := ls.s.(store.AtomicGCRA).CheckGCRA(ctx, limiter, key, g, now, cost)
	ls.observe("check", start, true, err)
	return d, err
}

func (ls *limiterStore) checkGCRABatch(ctx context.Context, limiter string, g algorithm.GCRA, now int64, keys []string, costs []int64, out []algorithm.Decision, errs []error) error {
	start := time.Now()
	err := ls.s.(store.AtomicGCRABatch).CheckGCRABatch(ctx, limiter, g, now, keys, costs, out, errs)
	ls.observe("check", start, true, err)
	return err
}

// Close does nothing: the node closes the store it shares among its
// limiters (closeStore).
func (ls *limiterStore) Close() error { return nil }

// sameStoreSettings reports whether a limiter can keep running across a
// reload: its store settings are fixed when it is made.
func sameStoreSettings(a, b LimiterConfig) bool {
	return cmp.Or(a.StoreMode, ModeCache) == cmp.Or(b.StoreMode, ModeCache) &&
		cmp.Or(a.StoreFailure, "local") == cmp.Or(b.StoreFailure, "local")
}
