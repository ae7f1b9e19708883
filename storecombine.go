package flux

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
)

// Single checks of an atomic limiter whose store pipelines
// (store.AtomicGCRABatch) are combined: concurrent checks queue, and the
// caller that finds fewer than maxLeaders pipelines in flight becomes a
// leader, sends every queued check in one pipeline, answers them, and hands
// the lead to a caller still queued. A check thus costs the store a share
// of one round trip (one write and one read for the whole pipeline) instead
// of a round trip of its own, and alone it is sent at once. The I/O stays
// in the callers' goroutines.

// maxLeaders bounds the pipelines of combined checks in flight.
const maxLeaders = 8

// Call states.
const (
	callQueued    int32 = iota
	callTaken           // in a leader's pipeline: its answer will come
	callAbandoned       // its caller gave up before a leader took it
	callChosen          // chosen to lead: its goroutine takes it itself
)

// call is one combined check.
type call struct {
	key   string
	cost  int64
	d     Decision
	err   error
	now   int64
	state atomic.Int32
	// done carries one signal: true (chosen: lead now) or false (taken
	// by a leader and answered).
	done chan bool
}

// combiner queues the combined checks of one atomic engine.
type combiner struct {
	mu      sync.Mutex
	queue   []*call
	leaders int
}

// combined decides a check in a pipeline with the other checks queued at
// the same time. It returns the store's answer, or its error (the caller
// applies the failure policy); errAbandoned if the check waited longer than
// the timeout for a pipeline.
func (e *atomicEngine) combined(ctx context.Context, key string, cost int64, g algorithm.GCRA) (Decision, int64, error) {
	c := &call{key: key, cost: cost, done: make(chan bool, 1)}
	cb := &e.comb
	cb.mu.Lock()
	lead := cb.leaders < maxLeaders
	if lead {
		cb.leaders++
		c.state.Store(callChosen) // its own: no other leader takes it
	}
	cb.queue = append(cb.queue, c)
	cb.mu.Unlock()
	if !lead {
		timer := time.NewTimer(e.timeout)
		var signalled bool
		select {
		case lead = <-c.done:
			signalled = true
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		if !signalled {
			if c.state.CompareAndSwap(callQueued, callAbandoned) {
				if err := ctx.Err(); err != nil {
					return Decision{}, 0, err
				}
				return Decision{}, 0, errAbandoned
			}
			// Taken (its answer is coming, within the leader's timeout)
			// or chosen to lead (the signal is coming).
			lead = <-c.done
		}
		if !lead {
			return c.d, c.now, c.err
		}
	}
	e.lead(c, g)
	return c.d, c.now, c.err
}

// errAbandoned: a combined check waited for a pipeline longer than the
// store timeout.
var errAbandoned = errorString("flux: store busy: no pipeline within the timeout")

type errorString string

func (e errorString) Error() string { return string(e) }

// lead sends the queued checks (self included) in one pipeline, answers
// them, and hands the lead on.
func (e *atomicEngine) lead(self *call, g algorithm.GCRA) {
	cb := &e.comb
	cb.mu.Lock()
	batch := make([]*call, 0, len(cb.queue))
	rest := cb.queue[:0]
	for _, c := range cb.queue {
		switch {
		case c == self:
			c.state.Store(callTaken)
			batch = append(batch, c)
		case c.state.CompareAndSwap(callQueued, callTaken):
			batch = append(batch, c)
		case c.state.Load() == callChosen:
			rest = append(rest, c) // another leader's own
		}
	}
	clear(cb.queue[len(rest):])
	cb.queue = rest
	cb.mu.Unlock()

	now, err := e.now()
	if err == nil && len(batch) == 1 { // alone: the plain call is cheaper
		ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
		c := batch[0]
		c.d, err = e.st.CheckGCRA(ctx, e.name, c.key, g, now, c.cost)
		c.now = now
		cancel()
	} else if err == nil {
		keys := make([]string, len(batch))
		costs := make([]int64, len(batch))
		out := make([]Decision, len(batch))
		ierrs := make([]error, len(batch))
		for i, c := range batch {
			keys[i], costs[i] = c.key, c.cost
		}
		ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
		err = e.batcher.CheckGCRABatch(ctx, e.name, g, now, keys, costs, out, ierrs)
		cancel()
		for i, c := range batch {
			c.d, c.now, c.err = out[i], now, ierrs[i]
		}
	}
	for _, c := range batch {
		if err != nil {
			c.err = err
		}
		if c != self {
			c.done <- false
		}
	}

	// Hand the lead to a queued call, or give it up.
	cb.mu.Lock()
	var next *call
	for _, c := range cb.queue {
		if c.state.CompareAndSwap(callQueued, callChosen) {
			next = c
			break
		}
	}
	if next == nil {
		cb.leaders--
	}
	cb.mu.Unlock()
	if next != nil {
		next.done <- true
	}
}
