package node

import "sync"

// The coalescer decides the requests waiting in several endpoints' Handle
// calls as one batch. A micro endpoint is one subscription, which delivers
// its requests one at a time and must reply inside Handle, so throughput
// comes from several endpoints on the same subject and queue group; the
// coalescer then turns their concurrent requests into one CheckBatch per
// limiter (one message per shard, not one per check), which is what makes
// single checks cost about what batched checks cost under load.
//
// It is leader-based (flat combining): a request that finds fewer than
// max batches in flight leads a batch at once, in its own goroutine, with
// whatever else is waiting, so an idle node adds no hand-off; otherwise it
// waits. A leader that finishes hands the waiting requests to the first of
// them, which leads the next batch, then wakes the requests it decided.
// Each request's reply is sent by its own Handle, after it wakes.

// call is one request's place in the coalescer, owned by its handler and
// reused for every request of that handler.
type call struct {
	h *handler
	// wake is signalled once per request that waited: it was decided, or
	// (lead != nil) it leads the next batch.
	wake  chan struct{}
	lead  []*call // the batch to lead, set before wake
	batch []*call // this call's buffer for the batches it leads
}

func (c *call) init(h *handler) {
	c.h = h
	c.wake = make(chan struct{}, 1)
}

type coalescer struct {
	max      int // most batches decided at once
	maxItems int // a leader stops taking requests beyond this many items
	decide   func(lead *handler, batch []*call)

	mu      sync.Mutex
	leaders int     // batches being decided
	pending []*call // requests waiting for a leader
}

func newCoalescer(max, maxItems int, decide func(*handler, []*call)) *coalescer {
	return &coalescer{max: max, maxItems: maxItems, decide: decide}
}

// do returns once me's request has been decided, by me or by a leader.
func (c *coalescer) do(me *call) {
	c.mu.Lock()
	if c.leaders < c.max {
		c.leaders++
		batch := c.takeLocked(append(me.batch[:0], me), len(me.h.items))
		c.mu.Unlock()
		c.run(me, batch)
		return
	}
	c.pending = append(c.pending, me)
	c.mu.Unlock()
	<-me.wake
	if batch := me.lead; batch != nil {
		me.lead = nil
		c.run(me, batch)
	}
}

// takeLocked moves waiting requests into batch, up to maxItems items in
// all, and returns it. c.mu is held.
func (c *coalescer) takeLocked(batch []*call, items int) []*call {
	k := 0
	for ; k < len(c.pending); k++ {
		n := len(c.pending[k].h.items)
		if len(batch) > 0 && items+n > c.maxItems {
			break
		}
		items += n
		batch = append(batch, c.pending[k])
	}
	rest := copy(c.pending, c.pending[k:])
	clear(c.pending[rest:])
	c.pending = c.pending[:rest]
	return batch
}

// run decides batch, led by me (batch[0]), hands the waiting requests to
// the next leader and wakes the requests it decided.
func (c *coalescer) run(me *call, batch []*call) {
	c.decide(me.h, batch)
	c.mu.Lock()
	var next *call
	if len(c.pending) > 0 {
		next = c.pending[0]
		next.lead = c.takeLocked(next.batch[:0], 0) // next first
	} else {
		c.leaders--
	}
	c.mu.Unlock()
	if next != nil {
		next.wake <- struct{}{}
	}
	for _, o := range batch[1:] {
		o.wake <- struct{}{}
	}
	clear(batch)
	me.batch = batch[:0]
}
