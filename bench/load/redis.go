package load

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fluxlimiter/flux/bench/internal/keyseq"
)

// gcraScript is GCRA in a Redis Lua script, the usual way to rate-limit
// with Redis (as redis-cell does natively): the key holds the theoretical
// arrival time in microseconds, read from the server's clock. ARGV is the
// emission interval T, the tolerance τ (both µs) and the cost; it returns 1
// if admitted.
var gcraScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new = tat + cost * T
if new - now <= tau + T then
  redis.call('SET', KEYS[1], new, 'PX', math.ceil((new - now) / 1000) + 1)
  return 1
end
return 0
`)

// Redis drives a Redis server running gcraScript, with the same keys as
// the other systems: one EVALSHA per request for one key per request, and
// a pipeline of Batch EVALSHAs per round trip for the batched case.
type Redis struct {
	// URL is a redis:// URL; use a database of its own (the keys expire
	// by themselves but are not otherwise cleaned up).
	URL string
	// Prefix is put before every key.
	Prefix string
	// Rate and Burst are the limit, as flux's.
	Rate, Burst float64
}

// Run sends cfg's load (closed loop only) from cfg.InFlight goroutines
// sharing one client with a pool of cfg.InFlight connections.
func (r Redis) Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	if cfg.Rate > 0 {
		return nil, errors.New("load: open-loop runs are not implemented for Redis")
	}
	opts, err := redis.ParseURL(r.URL)
	if err != nil {
		return nil, fmt.Errorf("load: redis: %w", err)
	}
	opts.PoolSize = cfg.InFlight
	opts.MinIdleConns = cfg.InFlight
	c := redis.NewClient(opts)
	defer c.Close()
	if err := gcraScript.Load(ctx, c).Err(); err != nil {
		return nil, fmt.Errorf("load: redis: load script: %w", err)
	}
	T := math.Round(1e6 / r.Rate)
	args := []any{int64(T), int64(math.Floor(r.Burst * T)), 1}
	names := keyseq.Names(r.Prefix+cfg.KeyPrefix, cfg.Keys)
	results := make([]Result, cfg.InFlight)
	base := time.Now()
	end := base.Add(cfg.Duration)
	var wg sync.WaitGroup
	for w := range cfg.InFlight {
		res := &results[w]
		wg.Go(func() { r.worker(ctx, c, cfg, names, args, end, res) })
	}
	wg.Wait()
	res := &Result{Name: cfg.Name, Batch: cfg.Batch, Elapsed: time.Since(base)}
	for i := range results {
		res.merge(&results[i])
	}
	return res, ctx.Err()
}

func (r Redis) worker(ctx context.Context, c *redis.Client, cfg Config, names []string, args []any, end time.Time, res *Result) {
	seq := keyseq.NewSeq()
	fail := func(n int, err error) {
		res.Errors += uint64(n)
		if res.FirstError == "" {
			res.FirstError = err.Error()
		}
	}
	keys := make([]string, 1)
	cmds := make([]*redis.Cmd, cfg.Batch)
	for time.Now().Before(end) && ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		t0 := time.Now()
		var err error
		if cfg.Batch == 1 {
			keys[0] = names[seq.Next(len(names))]
			cmds[0] = gcraScript.EvalSha(rctx, c, keys, args...)
			err = cmds[0].Err()
		} else {
			p := c.Pipeline()
			for i := range cmds {
				cmds[i] = gcraScript.EvalSha(rctx, p, []string{names[seq.Next(len(names))]}, args...)
			}
			_, err = p.Exec(rctx)
		}
		lat := time.Since(t0)
		cancel()
		if err != nil {
			fail(cfg.Batch, err)
			continue
		}
		for _, cmd := range cmds {
			switch v, err := cmd.Int(); {
			case err != nil:
				fail(1, err)
			case v == 0:
				res.Denied++
				res.Checks++
			default:
				res.Checks++
			}
		}
		res.Requests++
		res.Latency.Record(lat)
	}
}
