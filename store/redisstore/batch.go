package redisstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/internal/gcrastep"
)

var _ store.AtomicGCRABatch = (*Store)(nil)

// CheckGCRABatch implements store.AtomicGCRABatch: the CheckGCRA script for
// every item, EVALSHA in pipelines of at most 1000 commands, which Redis
// runs in order. If Redis has lost the script (a restart, SCRIPT FLUSH),
// it is loaded again and the items refused for that are sent again.
func (s *Store) CheckGCRABatch(ctx context.Context, limiter string, g algorithm.GCRA, now int64, keys []string, costs []int64, out []algorithm.Decision, errs []error) error {
	if len(out) < len(keys) || len(errs) < len(keys) || len(costs) < len(keys) {
		return fmt.Errorf("redisstore: gcra batch: %d keys, %d costs, room for %d decisions and %d errors", len(keys), len(costs), len(out), len(errs))
	}
	if err := s.check(limiter); err != nil {
		return err
	}
	if len(keys) == 0 {
		return nil
	}
	nowHi, nowLo := split(now)
	var nowArg any = nowHi
	if s.serverTime {
		nowArg = ""
	}
	args := make([]*gcraArgs, len(keys))
	var last *gcraArgs // the previous item's: costs rarely vary
	for i, k := range keys {
		errs[i] = nil
		if k == "" {
			errs[i] = fmt.Errorf("%w: empty key", store.ErrInvalidKey)
			continue
		}
		nT, bound, err := gcrastep.Args(g, costs[i])
		if err != nil {
			errs[i] = err
			continue
		}
		if last == nil || last.nT != nT || last.bound != bound {
			if last = s.args.Load(); last == nil || last.nT != nT || last.bound != bound {
				last = newGCRAArgs(nT, bound, s.marginMs)
			}
		}
		args[i] = last
	}
	send := func(idx []int) ([]*redis.Cmd, error) {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(idx))
		for j, i := range idx {
			a := args[i]
			cmds[j] = gcraScript.EvalSha(ctx, pipe, []string{s.key("g:", limiter, keys[i])},
				nowArg, nowLo, a.v[0], a.v[1], a.v[2], a.v[3], a.v[4])
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	todo := make([]int, 0, len(keys))
	for i := range keys {
		if errs[i] == nil {
			todo = append(todo, i)
		}
	}
	for loaded := false; len(todo) > 0; {
		chunk := todo[:min(len(todo), maxPipeline)]
		cmds, err := send(chunk)
		var again []int
		for j, i := range chunk {
			cerr := cmds[j].Err()
			if cerr != nil && !loaded && strings.HasPrefix(cerr.Error(), "NOSCRIPT") {
				again = append(again, i)
				continue
			}
			if cerr != nil {
				errs[i] = s.wrap("gcra", cerr)
				continue
			}
			res, cerr := cmds[j].Slice()
			if cerr != nil {
				errs[i] = s.wrap("gcra", cerr)
				continue
			}
			verdict, tat, serverNow, cerr := parseReply(res)
			if cerr != nil {
				errs[i] = cerr
				continue
			}
			at := now
			if s.serverTime {
				at = serverNow
			}
			d, cerr := gcrastep.Decide(g, at, costs[i], verdict == 1, tat)
			if cerr != nil {
				errs[i] = fmt.Errorf("redisstore: %w", cerr)
				continue
			}
			out[i] = d
		}
		if err != nil && len(again) == 0 && allFailed(errs, chunk) {
			return s.wrap("gcra", err)
		}
		todo = todo[len(chunk):]
		if len(again) > 0 {
			if err := gcraScript.Load(ctx, s.rdb).Err(); err != nil {
				return s.wrap("gcra: load script", err)
			}
			loaded = true
			todo = append(again, todo...)
		}
	}
	return nil
}

// allFailed reports whether every item of idx has an error: the pipeline
// as a whole failed (a broken connection, a deadline).
func allFailed(errs []error, idx []int) bool {
	for _, i := range idx {
		if errs[i] == nil {
			return false
		}
	}
	return true
}
