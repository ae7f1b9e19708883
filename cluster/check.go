package cluster

// Deciding checks: locally, at the key's owner, or by the failure policy
// when the owner does not answer.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	flux "github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
)

// Answer is a decision and where it came from.
type Answer struct {
	flux.Decision
	Path Path
}

func (c *Coordinator) now() int64 {
	if t, err := c.clk.Now(); err == nil {
		return t
	}
	return time.Now().UnixNano()
}

// routed reports whether e's checks may go to an owner.
func (c *Coordinator) routed(e *entry) bool {
	return e.cfg.Mode >= Strict && c.state.Load() == stateRunning
}

// far reports whether, in hybrid mode, the local view p leaves enough of
// the key's capacity after a request of cost to decide locally.
func (e *entry) far(p flux.Decision, cost int) bool {
	left := p.Remaining - cost
	return left >= 0 && float64(left) >= e.cfg.HybridThreshold*float64(p.Limit)
}

// charge is the cost r is decided with, as flux.Request defines it: 0 for
// a peek, 1 when Cost is unset.
func charge(r *flux.Request) int {
	switch {
	case r.Peek:
		return 0
	case r.Cost == 0:
		return 1
	}
	return r.Cost
}

// Check decides a request of cost for key under limiter name, according to
// the limiter's mode (cost 0 peeks). An error is for the request itself
// (an invalid key or cost, an unknown limiter, a closed limiter, ctx
// ending); an owner that does not answer is not an error but a fallback
// answer.
func (c *Coordinator) Check(ctx context.Context, limiter, key string, cost int) (Answer, error) {
	e, err := c.get(limiter)
	if err != nil {
		return Answer{}, err
	}
	if !c.routed(e) {
		return c.decide(ctx, e, key, cost, PathLocal)
	}
	owner := c.mem.Owner(key)
	if owner == c.self || owner == "" {
		return c.decide(ctx, e, key, cost, PathLocal)
	}
	// Refused here what the owner would refuse: nothing invalid is sent.
	if err := e.lim.Validate(flux.Request{Key: key, Cost: cost, Peek: cost == 0}); err != nil {
		return Answer{}, err
	}
	if e.cfg.Mode == Hybrid {
		p, err := e.lim.Peek(ctx, key)
		if err != nil {
			return Answer{}, err
		}
		if e.far(p, cost) {
			return c.decide(ctx, e, key, cost, PathLocal)
		}
	}
	if c.suspected(owner) {
		return c.fallback(ctx, e, key, cost)
	}
	wctx, cancel := context.WithTimeout(ctx, e.cfg.OwnerDeadline)
	defer cancel()
	res, err := c.fwd.Ask(wctx, owner, bus.Check{Limiter: e.name, Key: key, Cost: cost}, e.cfg.OwnerDeadline)
	if err == nil && res.Err == nil {
		e.answers[PathOwner].Add(1)
		return Answer{Decision: res.Decision, Path: PathOwner}, nil
	}
	if err == nil && passThrough(res.Err) {
		return Answer{}, res.Err
	}
	if ctx.Err() != nil {
		return Answer{}, ctx.Err()
	}
	c.ownerFailed(owner, err, res.Err)
	return c.fallback(ctx, e, key, cost)
}

// passThrough reports whether an owner's error belongs to the request (it
// would fail on any node) rather than to the owner.
func passThrough(err error) bool {
	return errors.Is(err, flux.ErrEmptyKey) || errors.Is(err, flux.ErrKeyTooLong) ||
		errors.Is(err, flux.ErrInvalidCost) || errors.Is(err, flux.ErrCostExceedsCapacity) ||
		errors.Is(err, flux.ErrFull)
}

// ownerFailed notes a forward that failed: a transport failure makes the
// owner suspect; an owner that answered with an error is not.
func (c *Coordinator) ownerFailed(owner string, transport, remote error) {
	if transport != nil {
		c.suspect(owner)
		c.log.Debug("flux cluster: owner did not answer", "owner", owner, "err", transport)
		return
	}
	c.log.Debug("flux cluster: owner failed", "owner", owner, "err", remote)
}

// decide decides locally and gossips what it admits.
func (c *Coordinator) decide(ctx context.Context, e *entry, key string, cost int, path Path) (Answer, error) {
	d, err := e.lim.CheckN(ctx, key, cost)
	if err != nil {
		return Answer{}, err
	}
	if d.Allowed && cost > 0 && e.g != nil {
		e.g.add(key, c.now(), cost)
	}
	e.answers[path].Add(1)
	return Answer{Decision: d, Path: path}, nil
}

// fallback answers by the failure policy.
func (c *Coordinator) fallback(ctx context.Context, e *entry, key string, cost int) (Answer, error) {
	switch e.cfg.OnOwnerFailure {
	case FailOpen, FailClosed:
		e.answers[PathFallback].Add(1)
		return Answer{Decision: e.policyDecision(), Path: PathFallback}, nil
	}
	return c.decide(ctx, e, key, cost, PathFallback)
}

// policyDecision is the answer of the open and closed policies.
func (e *entry) policyDecision() flux.Decision {
	capacity := e.lim.Limit().Capacity()
	if e.cfg.OnOwnerFailure == FailOpen {
		return flux.Decision{Allowed: true, Limit: capacity}
	}
	return flux.Decision{Limit: capacity, RetryAfter: e.cfg.OwnerDeadline}
}

// CheckBatch decides reqs under limiter name: out[i] answers reqs[i], or
// itemErrs[i] says why it could not be decided, as with
// flux.Limiter.CheckEach: an invalid item does not stop the others. Items
// decided locally go to the limiter in one batch; items owned elsewhere are
// forwarded together and waited for together. The returned error is for
// the batch as a whole (ctx, a closed limiter). itemErrs must be zero on
// entry.
func (c *Coordinator) CheckBatch(ctx context.Context, limiter string, reqs []flux.Request, out []Answer, itemErrs []error) error {
	if len(out) < len(reqs) || len(itemErrs) < len(reqs) {
		return fmt.Errorf("%w: out and itemErrs have room for %d and %d items, reqs has %d", ErrInvalidConfig, len(out), len(itemErrs), len(reqs))
	}
	e, err := c.get(limiter)
	if err != nil {
		return err
	}
	// Items are validated before routing, so that nothing invalid is
	// forwarded; the limiter validates, so the rules live in one place.
	valid := make([]int, 0, len(reqs))
	for i := range reqs {
		if err := e.lim.Validate(reqs[i]); err != nil {
			itemErrs[i] = err
			continue
		}
		valid = append(valid, i)
	}
	if !c.routed(e) {
		return c.decideSome(ctx, e, reqs, valid, out, itemErrs, PathLocal)
	}
	var peeks []flux.Decision
	if e.cfg.Mode == Hybrid {
		peeks = make([]flux.Decision, len(reqs))
		pr := make([]flux.Request, len(valid))
		pd := make([]flux.Decision, len(valid))
		pe := make([]error, len(valid))
		for j, i := range valid {
			pr[j] = flux.Request{Key: reqs[i].Key, Peek: true}
		}
		if err := e.lim.CheckEach(ctx, pr, pd, pe); err != nil {
			return err
		}
		for j, i := range valid {
			peeks[i] = pd[j] // a failed peek leaves a zero Decision: not far, ask the owner
		}
	}
	view := c.mem.View()
	var local, fallback, remote []int
	var owners []string
	var calls []*bus.Call
	var taken map[string]int // hybrid: cost already decided locally per key in this batch
	for _, i := range valid {
		r := &reqs[i]
		owner := view.Owner(r.Key)
		switch {
		case owner == c.self || owner == "":
			local = append(local, i)
		case peeks != nil && e.far(peeks[i], charge(r)+taken[r.Key]):
			if taken == nil {
				taken = make(map[string]int)
			}
			taken[r.Key] += charge(r)
			local = append(local, i)
		case c.suspected(owner):
			fallback = append(fallback, i)
		default:
			remote = append(remote, i)
			owners = append(owners, owner)
			calls = append(calls, c.fwd.Enqueue(owner, bus.Check{Limiter: e.name, Key: r.Key, Cost: charge(r)}, e.cfg.OwnerDeadline))
		}
	}
	if err := c.decideSome(ctx, e, reqs, local, out, itemErrs, PathLocal); err != nil {
		return err
	}
	if len(calls) > 0 {
		wctx, cancel := context.WithTimeout(ctx, e.cfg.OwnerDeadline)
		for j, call := range calls {
			i := remote[j]
			res, err := call.Wait(wctx)
			switch {
			case err == nil && res.Err == nil:
				out[i] = Answer{Decision: res.Decision, Path: PathOwner}
				e.answers[PathOwner].Add(1)
			case err == nil && passThrough(res.Err):
				itemErrs[i] = res.Err
			case ctx.Err() != nil:
				cancel()
				return ctx.Err()
			default:
				c.ownerFailed(owners[j], err, res.Err)
				fallback = append(fallback, i)
			}
		}
		cancel()
	}
	if len(fallback) == 0 {
		return nil
	}
	if e.cfg.OnOwnerFailure != FailLocal {
		d := e.policyDecision()
		for _, i := range fallback {
			out[i] = Answer{Decision: d, Path: PathFallback}
		}
		e.answers[PathFallback].Add(uint64(len(fallback)))
		return nil
	}
	slices.Sort(fallback)
	return c.decideSome(ctx, e, reqs, fallback, out, itemErrs, PathFallback)
}

// pathServed marks decisions made for a peer: they are counted in
// LimiterStats.Served, not in Answers.
const pathServed = numPaths

// decideSome decides reqs[i] for each i of idx locally, in one batch, and
// gossips what it admits.
func (c *Coordinator) decideSome(ctx context.Context, e *entry, reqs []flux.Request, idx []int, out []Answer, itemErrs []error, path Path) error {
	if len(idx) == 0 {
		return nil
	}
	sub := make([]flux.Request, len(idx))
	for j, i := range idx {
		sub[j] = reqs[i]
	}
	ds := make([]flux.Decision, len(idx))
	errs := make([]error, len(idx))
	if err := e.lim.CheckEach(ctx, sub, ds, errs); err != nil {
		return err
	}
	now := c.now()
	n := 0
	for j, i := range idx {
		if errs[j] != nil {
			itemErrs[i] = errs[j]
			continue
		}
		n++
		out[i] = Answer{Decision: ds[j], Path: path}
		if cost := charge(&sub[j]); ds[j].Allowed && cost > 0 && e.g != nil {
			e.g.add(sub[j].Key, now, cost)
		}
	}
	if path == pathServed {
		e.served.Add(uint64(n))
	} else {
		e.answers[path].Add(uint64(n))
	}
	return nil
}
