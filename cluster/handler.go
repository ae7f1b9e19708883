package cluster

// What the bus delivers: heartbeats, peers' admissions, checks forwarded
// to this node as their owner, and state requests from joining nodes.

import (
	"context"
	"math"
	"time"

	flux "github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
)

// handler is the Coordinator's bus.Handler.
type handler struct{ c *Coordinator }

func (h handler) HandleHeartbeat(hb bus.Heartbeat) { h.c.mem.Observe(hb) }

func (h handler) HandleUpdates(from string, u bus.Updates) {
	c := h.c
	e := c.lookup(u.Limiter)
	if e == nil || e.cfg.Mode == Local || c.state.Load() == stateClosed {
		c.dropped.Add(uint64(len(u.Items)))
		return
	}
	c.catchMu.Lock()
	if c.catching {
		if c.backlogN+len(u.Items) <= maxBacklog {
			c.backlog = append(c.backlog, u)
			c.backlogN += len(u.Items)
		} else {
			c.dropped.Add(uint64(len(u.Items)))
		}
		c.catchMu.Unlock()
		return
	}
	c.catchMu.Unlock()
	c.apply(e, u.Items)
}

// apply adds peers' admissions to e's limiter. An item the limiter
// rejects (a key too long for it) is dropped and counted; the others are
// applied, once checked against local sense (sane).
func (c *Coordinator) apply(e *entry, items []flux.Update) {
	if items = c.sane(e, items); len(items) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	errs := make([]error, len(items))
	if err := e.lim.ApplyEach(ctx, items, errs); err != nil {
		c.dropped.Add(uint64(len(items)))
		c.log.Debug("flux cluster: applying updates failed", "limiter", e.name, "err", err)
		return
	}
	bad := 0
	for _, err := range errs {
		if err != nil {
			bad++
		}
	}
	c.dropped.Add(uint64(bad))
	e.applied.Add(uint64(len(items) - bad))
}

// sane keeps the items of a peer's update that make sense here, in place:
// an admission stamped more than MaxClockSkew ahead of this node's clock
// is refused (a TAT years ahead would deny the key for years), and a cost
// above what one node can admit of a key between two publications (the
// capacity, plus what the rate refills in a sync interval and a second:
// an honest aggregate never exceeds it) is applied as that bound. Keys
// longer than the limiter's maximum are the limiter's to refuse.
func (c *Coordinator) sane(e *entry, items []flux.Update) []flux.Update {
	lim := e.lim.Limit()
	refill := lim.Rate * (e.cfg.SyncInterval + time.Second).Seconds()
	maxCost := lim.Capacity() + int(min(math.Ceil(refill), 1<<31))
	horizon := c.now() + int64(c.cfg.MaxClockSkew)
	kept := items[:0]
	for _, it := range items {
		if it.At > horizon {
			c.refused.Add(1)
			continue
		}
		if it.Cost > maxCost {
			it.Cost = maxCost
			c.clamped.Add(1)
		}
		kept = append(kept, it)
	}
	return kept
}

// HandleForward decides checks forwarded by a peer that takes this node
// for their owner. It decides even if its own view names another owner:
// views differ only while membership changes, and refusing would only add
// a fallback.
func (h handler) HandleForward(ctx context.Context, from string, checks []bus.Check, out []bus.Result) {
	c := h.c
	reqs := make([]flux.Request, len(checks))
	groups := make(map[string][]int, 1) // by limiter, each in order
	for i := range checks {
		// On the bus a cost of 0 is a peek.
		reqs[i] = flux.Request{Key: checks[i].Key, Cost: checks[i].Cost, Peek: checks[i].Cost == 0}
		groups[checks[i].Limiter] = append(groups[checks[i].Limiter], i)
	}
	answers := make([]Answer, len(checks))
	errs := make([]error, len(checks))
	for name, idx := range groups {
		e, err := c.get(name)
		if err != nil {
			for _, i := range idx {
				errs[i] = err
			}
			continue
		}
		// decideSome reports invalid checks per item (flux.Limiter.CheckEach).
		if err := c.decideSome(ctx, e, reqs, idx, answers, errs, pathServed); err != nil {
			for _, i := range idx {
				errs[i] = err
			}
		}
	}
	for i := range out {
		out[i] = bus.Result{Decision: answers[i].Decision, Err: errs[i]}
	}
}

func (h handler) HandleSync(ctx context.Context, from, limiter string) ([]flux.KeyState, error) {
	e, err := h.c.get(limiter)
	if err != nil {
		return nil, err
	}
	return e.lim.Snapshot(ctx)
}
