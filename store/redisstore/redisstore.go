// Package redisstore is a store.Store on Redis (github.com/redis/go-redis/v9),
// with an atomic GCRA mode that runs the GCRA step inside Redis so that
// several nodes, or several library users without a node, share one exact
// limit.
//
// # Keys and values
//
// A state is the Redis string at
//
//	<prefix>s:<limiter>:<key>      value: IdleAt (8 bytes, big-endian) ‖ state
//
// and an atomic GCRA record the string at
//
//	<prefix>g:<limiter>:<key>      value: the TAT in decimal Unix nanoseconds
//
// where prefix is Options.Prefix ("flux:" by default), limiter is the
// limiter name with "%" and ":" percent-escaped (so limiter "a:b" and key
// "c" never meet limiter "a" and key "b:c"), and key is the client key as
// is (Redis keys are binary-safe).
//
// # Expiry
//
// Every key carries its own TTL (SET ... PX): the time until its state
// equals a fresh key, plus Options.Margin, rounded up to the millisecond.
// A state that never idles (store.NoExpiry) is written without a TTL. The
// atomic mode sets the same TTL from the new TAT on every admission.
//
// # Atomic GCRA
//
// CheckGCRA runs one Lua script (EVALSHA): read the TAT, apply the
// admission rule of algorithm.GCRA (next = max(TAT, now) + n·T, admitted
// iff next ≤ now + τ + T), store next with its TTL on admission, and
// return the verdict and TAT; the Decision is then computed by
// algorithm.GCRA from that TAT, so every field equals what the in-process
// limiter would give. Redis's Lua numbers are doubles, exact only to
// 2^53, so the script does its integer nanosecond arithmetic on (seconds,
// nanoseconds) pairs: it is exact over the whole int64 range and saturates
// like the Go code. Only GCRA (and, the same policy, token-bucket limits
// expressed as GCRA) is supported this way; every algorithm can share an
// exact limit through Update (WATCH/MULTI).
//
// With Options.ServerTime the script reads Redis's clock (TIME, in
// microseconds) instead of the now it is given, so that nodes whose clocks
// disagree still enforce one limit.
//
// Redis Cluster works through a *redis.ClusterClient: every command touches
// one key, batches are pipelined per key.
package redisstore

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/internal/errs"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/internal/gcrastep"
	"github.com/fluxlimiter/flux/store/internal/names"
)

// DefaultPrefix starts every key the store writes unless Options.Prefix
// says otherwise.
const DefaultPrefix = "flux:"

// maxPipeline bounds the commands sent in one pipeline.
const maxPipeline = 1000

// Options configure a Store. The zero value is usable.
type Options struct {
	// Prefix starts every Redis key (DefaultPrefix if empty). Stores with
	// different prefixes never see each other's data.
	Prefix string
	// Clock is the time TTLs are computed from (clock.NewSystem() if nil).
	// Pass the limiter's clock.
	Clock clock.Clock
	// Margin is added to every TTL (store.DefaultMargin if zero, none if
	// negative).
	Margin time.Duration
	// ServerTime makes CheckGCRA use Redis's clock instead of the now it is
	// given.
	ServerTime bool
}

// Store is a Redis-backed store. It is safe for simultaneous use; go-redis
// pools the connections.
type Store struct {
	rdb        redis.UniversalClient
	own        bool
	prefix     string
	clk        clock.Clock
	margin     time.Duration
	marginMs   int64
	serverTime bool
	closed     atomic.Bool
	args       atomic.Pointer[gcraArgs] // the last CheckGCRA's
}

var (
	_ store.Store       = (*Store)(nil)
	_ store.BatchLoader = (*Store)(nil)
	_ store.Updater     = (*Store)(nil)
	_ store.AtomicGCRA  = (*Store)(nil)
	_ store.Pinger      = (*Store)(nil)
)

// New returns a Store over rdb (a *redis.Client, *redis.ClusterClient or
// *redis.Ring). The caller keeps ownership of rdb: Close does not close it.
// For calls to honour their context deadlines, rdb needs
// ContextTimeoutEnabled (Open sets it); otherwise rdb's own read and write
// timeouts bound them.
func New(rdb redis.UniversalClient, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Clock == nil {
		opts.Clock = clock.NewSystem()
	}
	opts.Margin = store.Margin(opts.Margin)
	return &Store{
		rdb:        rdb,
		prefix:     opts.Prefix,
		clk:        opts.Clock,
		margin:     opts.Margin,
		marginMs:   int64((opts.Margin + time.Millisecond - 1) / time.Millisecond),
		serverTime: opts.ServerTime,
	}
}

// Open connects to the Redis server at url (redis://, rediss:// or
// unix://, as redis.ParseURL reads them), checks that it answers, and
// returns a Store that owns the connection: Close closes it. The client
// honours context deadlines (ContextTimeoutEnabled) and does not retry a
// refused dial, so an absent server is reported at once.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	ro, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	ro.ContextTimeoutEnabled = true
	if ro.DialerRetries == 0 {
		ro.DialerRetries = 1 // a refused connection is an error now, not in 400 ms
	}
	rdb := redis.NewClient(ro)
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redisstore: connect to %s: %w", ro.Addr, err)
	}
	s := New(rdb, opts)
	s.own = true
	return s, nil
}

// Client returns the go-redis client the store uses.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Ping implements store.Pinger: it reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return s.wrap("ping", s.rdb.Ping(ctx).Err())
}

// Close implements store.Store. It closes the client only if Open made it.
func (s *Store) Close() error {
	if s.closed.Swap(true) || !s.own {
		return nil
	}
	return s.rdb.Close()
}

// escLimiter percent-escapes '%' and ':' in a limiter name.
func escLimiter(l string) string {
	if !strings.ContainsAny(l, "%:") {
		return l
	}
	return strings.NewReplacer("%", "%25", ":", "%3A").Replace(l)
}

// key returns the Redis key of a limiter's key; kind is "s:" (states) or
// "g:" (atomic GCRA records).
func (s *Store) key(kind, limiter, key string) string {
	return s.prefix + kind + escLimiter(limiter) + ":" + key
}

// check validates names and the store's state.
func (s *Store) check(limiter string, keys ...string) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return names.Check(limiter, keys...)
}

func (s *Store) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.ErrClosed):
		return fmt.Errorf("redisstore: %s: %w (%w)", op, store.ErrClosed, err)
	}
	return fmt.Errorf("redisstore: %s: %w", op, err)
}

func decode(key string, v []byte) (store.Entry, error) {
	if len(v) < 8 {
		return store.Entry{}, fmt.Errorf("%w: redisstore: value of %d bytes", errs.InvalidState, len(v))
	}
	return store.Entry{Key: key, State: v[8:], IdleAt: int64(binary.BigEndian.Uint64(v))}, nil
}

func encode(e store.Entry) []byte {
	v := make([]byte, 8, 8+len(e.State))
	binary.BigEndian.PutUint64(v, uint64(e.IdleAt))
	return append(v, e.State...)
}

// ttl returns the PX argument for an entry idle at idleAt (0: no expiry).
func (s *Store) ttl(idleAt, now int64) time.Duration {
	d, ok := store.TTL(idleAt, now, s.margin)
	if !ok {
		return 0
	}
	return max((d + time.Millisecond - 1).Truncate(time.Millisecond), time.Millisecond)
}

// Load implements store.Store.
func (s *Store) Load(ctx context.Context, limiter, key string) (store.Entry, bool, error) {
	if err := s.check(limiter, key); err != nil {
		return store.Entry{}, false, err
	}
	v, err := s.rdb.Get(ctx, s.key("s:", limiter, key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return store.Entry{}, false, nil
	}
	if err != nil {
		return store.Entry{}, false, s.wrap("load", err)
	}
	e, err := decode(key, v)
	return e, err == nil, err
}

// LoadMany implements store.BatchLoader with pipelined GETs.
func (s *Store) LoadMany(ctx context.Context, limiter string, keys []string, out []store.Entry, found []bool) error {
	if len(out) < len(keys) || len(found) < len(keys) {
		return fmt.Errorf("redisstore: LoadMany: %d keys, room for %d entries and %d flags", len(keys), len(out), len(found))
	}
	if err := s.check(limiter, keys...); err != nil {
		return err
	}
	for lo := 0; lo < len(keys); lo += maxPipeline {
		part := keys[lo:min(lo+maxPipeline, len(keys))]
		cmds := make([]*redis.StringCmd, len(part))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, key := range part {
				cmds[i] = p.Get(ctx, s.key("s:", limiter, key))
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return s.wrap("load", err)
		}
		for i, c := range cmds {
			v, err := c.Bytes()
			switch {
			case errors.Is(err, redis.Nil):
				out[lo+i], found[lo+i] = store.Entry{}, false
			case err != nil:
				return s.wrap("load", err)
			default:
				e, err := decode(part[i], v)
				if err != nil {
					return err
				}
				out[lo+i], found[lo+i] = e, true
			}
		}
	}
	return nil
}

// Save implements store.Store with pipelined SETs, each with its own TTL.
func (s *Store) Save(ctx context.Context, limiter string, entries []store.Entry) error {
	if err := s.check(limiter); err != nil {
		return err
	}
	if err := names.EntryKeys(entries); err != nil {
		return err
	}
	now, err := s.clk.Now()
	if err != nil {
		return fmt.Errorf("redisstore: clock: %w", err)
	}
	for lo := 0; lo < len(entries); lo += maxPipeline {
		part := entries[lo:min(lo+maxPipeline, len(entries))]
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, e := range part {
				p.Set(ctx, s.key("s:", limiter, e.Key), encode(e), s.ttl(e.IdleAt, now))
			}
			return nil
		})
		if err != nil {
			return s.wrap("save", err)
		}
	}
	return nil
}

// Delete implements store.Store with pipelined DELs.
func (s *Store) Delete(ctx context.Context, limiter string, keys []string) error {
	if err := s.check(limiter, keys...); err != nil {
		return err
	}
	for lo := 0; lo < len(keys); lo += maxPipeline {
		part := keys[lo:min(lo+maxPipeline, len(keys))]
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, key := range part {
				p.Del(ctx, s.key("s:", limiter, key))
			}
			return nil
		})
		if err != nil {
			return s.wrap("delete", err)
		}
	}
	return nil
}

// Update implements store.Updater with WATCH, GET and MULTI/SET/EXEC,
// retrying while another client changes the key in between.
func (s *Store) Update(ctx context.Context, limiter, key string, fn store.UpdateFunc) error {
	if err := s.check(limiter, key); err != nil {
		return err
	}
	rk := s.key("s:", limiter, key)
	for {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			cur, found := store.Entry{Key: key}, false
			v, err := tx.Get(ctx, rk).Bytes()
			switch {
			case errors.Is(err, redis.Nil):
			case err != nil:
				return err
			default:
				if cur, err = decode(key, v); err != nil {
					return err
				}
				found = true
			}
			next, write := fn(cur, found)
			if !write {
				return nil
			}
			now, err := s.clk.Now()
			if err != nil {
				return fmt.Errorf("clock: %w", err)
			}
			next.Key = key
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, rk, encode(next), s.ttl(next.IdleAt, now))
				return nil
			})
			return err
		}, rk)
		if !errors.Is(err, redis.TxFailedErr) {
			return s.wrap("update", err)
		}
		if err := ctx.Err(); err != nil {
			return s.wrap("update", err)
		}
	}
}

//go:embed gcra.lua
var gcraLua string

var gcraScript = redis.NewScript(gcraLua)

// CheckGCRA implements store.AtomicGCRA with one Lua script call.
func (s *Store) CheckGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error) {
	nT, bound, err := gcrastep.Args(g, cost)
	if err != nil {
		return algorithm.Decision{}, err
	}
	if err := s.check(limiter, key); err != nil {
		return algorithm.Decision{}, err
	}
	args := s.args.Load()
	if args == nil || args.nT != nT || args.bound != bound {
		args = newGCRAArgs(nT, bound, s.marginMs)
		s.args.Store(args)
	}
	nowHi, nowLo := split(now)
	var nowArg any = nowHi
	if s.serverTime {
		nowArg = ""
	}
	res, err := gcraScript.Run(ctx, s.rdb, []string{s.key("g:", limiter, key)},
		nowArg, nowLo, args.v[0], args.v[1], args.v[2], args.v[3], args.v[4]).Slice()
	if err != nil {
		return algorithm.Decision{}, s.wrap("gcra", err)
	}
	verdict, tat, serverNow, err := parseReply(res)
	if err != nil {
		return algorithm.Decision{}, err
	}
	if s.serverTime {
		now = serverNow
	}
	d, err := gcrastep.Decide(g, now, cost, verdict == 1, tat)
	if err != nil {
		return algorithm.Decision{}, fmt.Errorf("redisstore: %w", err)
	}
	return d, nil
}

// gcraArgs are the script arguments that do not depend on the time, kept
// boxed between calls with the same limit and cost (the common case) to
// spare the allocations.
type gcraArgs struct {
	nT, bound int64
	v         [5]any // nT_hi, nT_lo, bound_hi, bound_lo, margin
}

func newGCRAArgs(nT, bound, marginMs int64) *gcraArgs {
	nHi, nLo := split(nT)
	bHi, bLo := split(bound)
	return &gcraArgs{nT: nT, bound: bound, v: [5]any{nHi, nLo, bHi, bLo, marginMs}}
}

// split returns (floor(v/1e9), v mod 1e9): the (hi, lo) pair the script
// computes with, both parts exact as Lua doubles.
func split(v int64) (hi, lo int64) {
	hi, lo = v/1e9, v%1e9
	if lo < 0 {
		hi, lo = hi-1, lo+1e9
	}
	return hi, lo
}

// parseReply reads the script's {verdict, tat, now}: verdict 1 admitted
// (tat is the new TAT), 0 denied (tat is the unchanged TAT), 2 peeked; an
// empty tat means the key has no record; now is the server's clock when
// the script read it, else empty (0).
func parseReply(res []any) (verdict, tat, now int64, err error) {
	bad := func(why string) (int64, int64, int64, error) {
		return 0, 0, 0, fmt.Errorf("redisstore: gcra script returned %v: %s", res, why)
	}
	if len(res) != 3 {
		return bad("want 3 values")
	}
	verdict, ok := res[0].(int64)
	ts, ok2 := res[1].(string)
	ns, ok3 := res[2].(string)
	if !ok || !ok2 || !ok3 {
		return bad("wrong types")
	}
	tat = gcrastep.Fresh
	if ts != "" {
		if tat, err = strconv.ParseInt(ts, 10, 64); err != nil {
			return bad(err.Error())
		}
	}
	if ns != "" {
		if now, err = strconv.ParseInt(ns, 10, 64); err != nil {
			return bad(err.Error())
		}
	}
	return verdict, tat, now, nil
}
