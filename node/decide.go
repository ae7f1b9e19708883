package node

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/cluster"
)

// decider decides the checks of one limiter as one batch: out[i] answers
// reqs[i], or errs[i] says why it could not be decided, and an invalid
// item does not stop the others. The returned error concerns the whole
// call (a closed limiter). errs is zero on entry. A decider is used by one
// goroutine at a time.
//
// The local limiters (localDecider) and the cluster Coordinator
// (clusterDecider, over cluster.Coordinator.CheckBatch) implement it, so
// the pipeline decides every request the same way whatever the limiter's
// mode.
type decider interface {
	decide(ctx context.Context, e *limiterEntry, reqs []flux.Request, out []cluster.Answer, errs []error) error
}

// localDecider decides on the node's own limiter. Its slices are
// scratch.
type localDecider struct {
	outs []flux.Decision
	errs []error
	todo []flux.Request
	pos  []int
}

func (d *localDecider) decide(ctx context.Context, e *limiterEntry, reqs []flux.Request, out []cluster.Answer, errs []error) error {
	if len(reqs) == 1 {
		// A check alone (an idle node) takes the limiter's single-check
		// path, which costs less than a batch of one.
		d, err := e.lim.CheckN(ctx, reqs[0].Key, reqs[0].Cost)
		out[0], errs[0] = cluster.Answer{Decision: d, Path: cluster.PathLocal}, err
		return nil
	}
	todo, pos := reqs, []int(nil) // pos[j] is the index in reqs of todo[j]; nil: the same
	defer func() { clear(d.todo) }()
	for {
		outs := slices.Grow(d.outs[:0], len(todo))[:len(todo)]
		terrs := slices.Grow(d.errs[:0], len(todo))[:len(todo)]
		d.outs, d.errs = outs, terrs
		clear(terrs)
		err := e.lim.CheckBatchEach(ctx, todo, outs, terrs)
		if be := batchError(err); be != nil && be.Index >= 0 && be.Index < len(todo) {
			// A concurrent reload shrank the capacity after validation:
			// the limiter refused the whole call naming the item, which
			// gets that error and is left out of the next try.
			if pos == nil {
				d.todo = append(d.todo[:0], todo...)
				d.pos = d.pos[:0]
				for j := range todo {
					d.pos = append(d.pos, j)
				}
				todo, pos = d.todo, d.pos
			}
			errs[pos[be.Index]] = be.Err
			todo = slices.Delete(todo, be.Index, be.Index+1)
			pos = slices.Delete(pos, be.Index, be.Index+1)
			if len(todo) == 0 {
				return nil
			}
			continue
		}
		for j := range todo {
			i := j
			if pos != nil {
				i = pos[j]
			}
			if terrs[j] != nil {
				errs[i] = terrs[j]
			} else {
				out[i] = cluster.Answer{Decision: outs[j], Path: cluster.PathLocal}
			}
		}
		clear(terrs)
		return err
	}
}

// batchError is err as a *flux.BatchError, nil if it is not one (without
// the allocation errors.As costs on the path where err is nil).
func batchError(err error) *flux.BatchError {
	var be *flux.BatchError
	if err == nil || !errors.As(err, &be) {
		return nil
	}
	return be
}

// clusterDecider decides through the Coordinator. A limiter the
// Coordinator does not know (a reload that failed to register it) is
// decided alone.
type clusterDecider struct {
	co    *cluster.Coordinator
	local *localDecider
}

func (d clusterDecider) decide(ctx context.Context, e *limiterEntry, reqs []flux.Request, out []cluster.Answer, errs []error) error {
	err := d.co.CheckBatch(ctx, e.name, reqs, out, errs)
	if errors.Is(err, cluster.ErrUnknownLimiter) {
		clear(errs)
		return d.local.decide(ctx, e, reqs, out, errs)
	}
	return err
}

// decideScratch is a leader's scratch for deciding a batch.
type decideScratch struct {
	entries []*limiterEntry
	reqs    []flux.Request
	where   []*result
	out     []cluster.Answer
	errs    []error
	local   localDecider
}

// deciderFor returns what decides e's checks: the Coordinator for a
// non-local limiter of a clustered node, else the limiter itself.
func (n *Node) deciderFor(e *limiterEntry, sc *decideScratch) (decider, bool) {
	if m := e.cfg.Mode; m != "" && m != "local" {
		if co := n.cl.coord.Load(); co != nil {
			return clusterDecider{co, &sc.local}, true
		}
	}
	return &sc.local, false
}

// decideBatch decides the valid items of the requests hs: one decider
// call per limiter, whatever request each item came from.
func (n *Node) decideBatch(sc *decideScratch, hs []*handler) {
	entries := sc.entries[:0]
	for _, h := range hs {
		for i := range h.res {
			if r := &h.res[i]; r.e.Code == 0 && !slices.Contains(entries, r.entry) {
				entries = append(entries, r.entry)
			}
		}
	}
	for _, e := range entries {
		reqs, where := sc.reqs[:0], sc.where[:0]
		for _, h := range hs {
			for i := range h.res {
				if r := &h.res[i]; r.entry == e && r.e.Code == 0 {
					reqs = append(reqs, flux.Request{Key: h.items[i].Key, Cost: int(h.items[i].Cost), Peek: h.items[i].Cost == 0}) // on the wire, cost 0 peeks
					where = append(where, r)
				}
			}
		}
		out := slices.Grow(sc.out[:0], len(reqs))[:len(reqs)]
		errs := slices.Grow(sc.errs[:0], len(reqs))[:len(reqs)]
		clear(errs)
		d, clustered := n.deciderFor(e, sc)
		t0 := time.Now()
		err := d.decide(limiterCtx, e, reqs, out, errs)
		took := time.Since(t0)
		for j, r := range where {
			switch {
			case err != nil:
				r.e = errorFor(err)
			case errs[j] != nil:
				r.e = errorFor(errs[j])
			default:
				r.d = out[j]
			}
		}
		n.obs.decided(e, took, clustered, out, errs, err)
		clear(reqs)
		clear(where)
		sc.reqs, sc.where, sc.out, sc.errs = reqs, where, out, errs
	}
	clear(entries)
	sc.entries = entries[:0]
}
