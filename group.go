package flux

// group is the engine that decides in the limiter's own shards, and the
// machinery that spreads a batch over them and gathers the answers.

import (
	"context"
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/shard"
)

// group is the engine for algorithms whose per-key state is S.
type group[S any] struct {
	shards  []*shard.Shard[S]
	seed    maphash.Seed
	compile func(Limit) (algorithm.Algorithm[S], error)
	alg     atomic.Pointer[algorithm.Algorithm[S]]
	pool    sync.Pool // *pending
}

func newGroup[S any](alg algorithm.Algorithm[S], o options, compile func(Limit) (algorithm.Algorithm[S], error)) *group[S] {
	g := &group[S]{seed: maphash.MakeSeed(), compile: compile}
	g.alg.Store(&alg)
	perShard := 0
	if o.maxKeys > 0 {
		perShard = (o.maxKeys + o.shards - 1) / o.shards
	}
	var onPanic func(any)
	if o.logger != nil {
		lg := o.logger
		onPanic = func(v any) { lg.Error("flux: shard handler panicked", "panic", v) }
	}
	g.shards = make([]*shard.Shard[S], o.shards)
	for i := range g.shards {
		g.shards[i] = shard.New(shard.Config[S]{
			ID:          i,
			Algorithm:   alg,
			Clock:       o.clock,
			Mailbox:     o.mailbox,
			MaxWait:     o.wait,
			MaxKeys:     perShard,
			SweepEvery:  o.sweepEvery,
			SweepBudget: o.sweepBudget,
			OnPanic:     onPanic,
			Persistence: o.persist,
		})
	}
	n := len(g.shards)
	g.pool.New = func() any {
		p := &pending{parts: make([]part, n), done: make(chan *shard.Batch, n)}
		for i := range p.parts {
			p.parts[i].b.Done = p.done
		}
		return p
	}
	return g
}

func (g *group[S]) index(key string) int {
	if len(g.shards) == 1 {
		return 0
	}
	hi, _ := bits.Mul64(maphash.String(g.seed, key), uint64(len(g.shards)))
	return int(hi)
}

func (g *group[S]) check(ctx context.Context, key string, cost int64) (Decision, error) {
	d, err := g.shards[g.index(key)].Check(ctx, key, cost)
	return Decision(d), err
}

func (g *group[S]) checkAsync(ctx context.Context, key string, cost int64) (chan shard.Reply, <-chan struct{}, error) {
	sh := g.shards[g.index(key)]
	rc, err := sh.CheckAsync(ctx, key, cost)
	return rc, sh.Done(), err
}

// pending is a batch in flight: one part per shard. It is pooled. When the
// caller's context can end (and the caller owns out), shards write into
// per-part scratch and finish copies; a batch abandoned mid-flight is then
// not returned to the pool, because shards may still write into it. When
// the context cannot end, or out belongs to a future, shards write straight
// into out.
type pending struct {
	parts  []part
	done   chan *shard.Batch
	sent   int
	direct bool
}

type part struct {
	b       shard.Batch
	idx     []int32
	scratch []Decision
}

// grow returns the part's scratch output with room for n decisions.
func (pt *part) grow(n int) []Decision {
	if cap(pt.scratch) < n {
		pt.scratch = make([]Decision, n, 2*n)
	}
	return pt.scratch[:n]
}

// start sends reqs to their shards. direct says the shards may write into
// out themselves (see pending).
func (g *group[S]) start(ctx context.Context, reqs []Request, out []Decision, direct bool) (*pending, error) {
	p := g.pool.Get().(*pending)
	p.sent, p.direct = 0, direct
	if len(p.parts) == 1 {
		// One shard: it reads reqs in place, in order.
		pt := &p.parts[0]
		pt.b.Reqs, pt.b.Sel, pt.b.Idx, pt.b.Errs, pt.b.Err, pt.idx = shardRequests(reqs), nil, nil, nil, nil, pt.idx[:0]
		if direct {
			pt.b.Out = out
		} else {
			pt.b.Out = pt.grow(len(reqs))
		}
		if err := g.shards[0].SendBatch(ctx, &pt.b); err != nil {
			pt.b.Reqs, pt.b.Out = nil, nil
			g.pool.Put(p)
			return nil, err
		}
		p.sent = 1
		return p, nil
	}
	sreqs := shardRequests(reqs)
	for i := range p.parts {
		pt := &p.parts[i]
		pt.b.Reqs, pt.b.Errs, pt.b.Err, pt.idx = sreqs, nil, nil, pt.idx[:0]
	}
	for i := range reqs {
		pt := &p.parts[g.index(reqs[i].Key)]
		pt.idx = append(pt.idx, int32(i))
	}
	for i := range p.parts {
		pt := &p.parts[i]
		n := len(pt.idx)
		if n == 0 {
			pt.b.Reqs = nil
			continue
		}
		pt.b.Sel = pt.idx
		if direct {
			pt.b.Out, pt.b.Idx = out, pt.idx
		} else {
			pt.b.Out, pt.b.Idx = pt.grow(n), nil
		}
		if err := g.shards[i].SendBatch(ctx, &pt.b); err != nil {
			if direct {
				// Parts already sent write into out: wait for them (queued
				// parts are always answered, even by a stopping shard).
				for range p.sent {
					<-p.done
				}
				p.sent = 0
			}
			if p.sent == 0 {
				for i := range p.parts { // drop the references to the caller's slices
					p.parts[i].b.Reqs, p.parts[i].b.Out = nil, nil
				}
				g.pool.Put(p)
			}
			return nil, err
		}
		p.sent++
	}
	return p, nil
}

func (g *group[S]) finish(ctx context.Context, p *pending, out []Decision, itemErrs []error) error {
	var first error
	for range p.sent {
		select {
		case b := <-p.done:
			if b.Err != nil && first == nil {
				first = b.Err
			}
		case <-ctx.Done():
			return ctx.Err() // p is abandoned: shards may still write into it
		}
	}
	var firstItem error
	firstIdx := len(out)
	one := len(p.parts) == 1
	for i := range p.parts {
		pt := &p.parts[i]
		if !p.direct {
			if one {
				copy(out, pt.b.Out)
			}
			for j, k := range pt.idx {
				out[k] = pt.b.Out[j]
			}
		}
		for j, err := range pt.b.Errs {
			if err == nil {
				continue
			}
			k := j
			if !one {
				k = int(pt.idx[j])
			}
			if itemErrs != nil {
				itemErrs[k] = err
			} else if k < firstIdx {
				firstIdx, firstItem = k, err
			}
		}
		pt.b.Out, pt.b.Reqs = nil, nil // drop the references to the caller's slices
	}
	g.pool.Put(p)
	if first == nil && firstItem != nil {
		first = &BatchError{Index: firstIdx, Err: firstItem}
	}
	return first
}

func (g *group[S]) apply(ctx context.Context, ups []Update) error {
	parts := make([]shard.Batch, len(g.shards))
	done := make(chan *shard.Batch, len(g.shards))
	for _, u := range ups {
		b := &parts[g.index(u.Key)]
		b.Items = append(b.Items, shard.Item{Key: u.Key, Cost: int64(u.Cost), At: u.At})
	}
	sent := 0
	for i := range parts {
		if len(parts[i].Items) == 0 {
			continue
		}
		parts[i].Done = done
		if err := g.shards[i].SendApply(ctx, &parts[i]); err != nil {
			return err
		}
		sent++
	}
	var first error
	for range sent {
		select {
		case b := <-done:
			if b.Err != nil && first == nil {
				first = b.Err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first
}

func (g *group[S]) setLimit(ctx context.Context, lim Limit) (int64, error) {
	alg, err := g.compile(lim)
	if err != nil {
		return 0, err
	}
	eg, ectx := errgroup.WithContext(ctx)
	for _, sh := range g.shards {
		eg.Go(func() error { return sh.SetAlgorithm(ectx, alg) })
	}
	if err := eg.Wait(); err != nil {
		return 0, err
	}
	g.alg.Store(&alg)
	return alg.Capacity(), nil
}

func (g *group[S]) cleanup(ctx context.Context, i int, staleAfter time.Duration) (int, error) {
	total := 0
	for start := true; ; start = false {
		n, done, err := g.shards[i].CleanupStep(ctx, staleAfter, 0, start)
		total += n
		if err != nil || done {
			return total, err
		}
	}
}

func (g *group[S]) snapshot(ctx context.Context) ([]KeyState, error) {
	alg := *g.alg.Load()
	var out []KeyState
	for _, sh := range g.shards {
		es, err := sh.Snapshot(ctx)
		if err != nil {
			return out, err
		}
		for _, e := range es {
			out = append(out, KeyState{Key: e.Key, State: alg.AppendState(nil, e.State)})
		}
	}
	return out, nil
}

func (g *group[S]) restore(ctx context.Context, states []KeyState) error {
	alg := *g.alg.Load()
	parts := make([][]shard.Entry[S], len(g.shards))
	for i, ks := range states {
		if len(ks.Key) == 0 {
			return &BatchError{Index: i, Err: ErrEmptyKey}
		}
		st, err := alg.DecodeState(ks.State)
		if err != nil {
			return &BatchError{Index: i, Err: err}
		}
		k := g.index(ks.Key)
		parts[k] = append(parts[k], shard.Entry[S]{Key: ks.Key, State: st})
	}
	for i, es := range parts {
		if len(es) == 0 {
			continue
		}
		if err := g.shards[i].Restore(ctx, es); err != nil {
			return err
		}
	}
	return nil
}

func (g *group[S]) shardCount() int { return len(g.shards) }

func (g *group[S]) len() int {
	n := 0
	for _, sh := range g.shards {
		n += sh.Len()
	}
	return n
}

func (g *group[S]) stats() []shard.Stats {
	out := make([]shard.Stats, len(g.shards))
	for i, sh := range g.shards {
		out[i] = sh.Stats()
	}
	return out
}

func (g *group[S]) storeStats() []shard.StoreStats {
	out := make([]shard.StoreStats, len(g.shards))
	for i, sh := range g.shards {
		out[i] = sh.StoreStats()
	}
	return out
}

func (g *group[S]) stop() {
	var wg sync.WaitGroup
	for _, sh := range g.shards {
		wg.Go(sh.Stop)
	}
	wg.Wait()
}
