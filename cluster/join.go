package cluster

// Joining the cluster: catching up with the peers' state before this node
// announces itself as a member.

import (
	"context"
	"sync"
	"time"

	flux "github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
)

// Start joins the cluster: it listens on the bus, waits JoinWait for the
// peers to introduce themselves, asks them for the state of every
// non-local limiter (keeping, for each key, the state held by the peer
// that owned it), restores it, applies the gossip received meanwhile, and
// then announces this node as a member. Failing to reach a peer is not an
// error (the node starts with what it got); the error is the bus's, or
// ctx's, and the Coordinator must then be closed. Checks made before Start
// returns are decided locally.
func (c *Coordinator) Start(ctx context.Context) error {
	if !c.state.CompareAndSwap(stateNew, stateStarting) {
		if c.state.Load() == stateClosed {
			return ErrClosed
		}
		return ErrStarted
	}
	c.catchMu.Lock()
	c.catching = true
	c.catchMu.Unlock()
	if err := c.bus.Listen(handler{c}); err != nil {
		return err
	}
	if err := c.mem.Start(); err != nil {
		return err
	}
	t := time.NewTimer(c.cfg.JoinWait)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
	c.catchUp(ctx)
	c.endCatchUp()
	if err := c.mem.Activate(ctx); err != nil {
		return err
	}
	if !c.state.CompareAndSwap(stateStarting, stateRunning) {
		return ErrClosed
	}
	c.log.Info("flux cluster: joined", "node", c.self, "members", c.mem.View().Len())
	return nil
}

func (c *Coordinator) catchUp(ctx context.Context) {
	peers := c.mem.Peers()
	if len(peers) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CatchUpTimeout)
	defer cancel()
	for _, e := range *c.entries.Load() {
		if e.cfg.Mode == Local {
			continue
		}
		type reply struct {
			states []flux.KeyState
			err    error
		}
		replies := make([]reply, len(peers))
		var wg sync.WaitGroup
		for i, p := range peers {
			wg.Go(func() { replies[i].states, replies[i].err = c.bus.Sync(ctx, p, e.name) })
		}
		wg.Wait()
		var ok []string
		for i, r := range replies {
			if r.err != nil {
				c.log.Debug("flux cluster: catch-up from peer failed", "limiter", e.name, "peer", peers[i], "err", r.err)
				continue
			}
			ok = append(ok, peers[i])
		}
		// Each key's best state is the one of the peer that owned it.
		view := bus.NewView(ok...)
		var merged []flux.KeyState
		for i, r := range replies {
			for _, st := range r.states {
				if r.err == nil && view.Owner(st.Key) == peers[i] {
					merged = append(merged, st)
				}
			}
		}
		if len(merged) == 0 {
			continue
		}
		if err := e.lim.Restore(ctx, merged); err != nil {
			c.log.Debug("flux cluster: restore failed", "limiter", e.name, "err", err)
			continue
		}
		c.caughtUp.Add(uint64(len(merged)))
	}
}

// endCatchUp applies the gossip received while catching up. Admissions
// already in the restored state are counted twice: the error is on the
// side of denying.
func (c *Coordinator) endCatchUp() {
	c.catchMu.Lock()
	backlog := c.backlog
	c.backlog, c.backlogN, c.catching = nil, 0, false
	c.catchMu.Unlock()
	for _, u := range backlog {
		if e := c.lookup(u.Limiter); e != nil {
			c.apply(e, u.Items)
		}
	}
}
