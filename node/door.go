package node

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// A door is the one way into the node for one subject: several queue
// subscriptions in micro's queue group feed one Go channel, read by a pool
// of workers that run the pipeline (pipeline.go). A check worker takes
// every request waiting in the channel (up to maxCoalesce) and decides
// them together, one decider call per limiter, so that under load single
// checks cost about what batched checks cost.
//
// Why not micro endpoints: micro delivers each request to a Handle call
// that must reply before it returns, one at a time per subscription. Fed
// that way, requests reach the pipeline one goroutine each and are seldom
// waiting together, so they are decided one by one, and each costs a
// goroutine wake-up and a shard round trip of its own (docs/OPERATIONS.md,
// "The request path", gives the measurement). The node speaks
// micro's discovery protocol itself instead (discovery.go), from the
// doors' own counters, so $SRV.STATS counts every request answered.

const (
	// doorBuffer is each door's channel capacity in messages; a full
	// channel drops messages as a NATS slow consumer would (the client
	// times out).
	doorBuffer = 1 << 16
	// maxCoalesce bounds the check requests a worker decides together.
	maxCoalesce = 64
	// subsPerWorker is the door's queue subscriptions per worker: the
	// server spreads a queue group's messages over its members at random,
	// and nats.go delivers each subscription's in order, so several keep
	// the channel fed.
	subsPerWorker = 4
)

// door is one subject's entrance and its counters.
type door struct {
	kind    kind
	subject string
	name    string // the endpoint's name in $SRV.INFO and STATS
	ch      chan *nats.Msg
	subs    []*nats.Subscription

	requests atomic.Uint64
	errors   atomic.Uint64
	procNS   atomic.Int64  // time spent answering, summed over requests
	groups   atomic.Uint64 // groups of requests answered together

	errMu   sync.Mutex
	lastErr string
}

// record counts k answered requests, errs of them with errors (the last
// being lastErr), which took d each.
func (d *door) record(k, errs int, lastErr string, each time.Duration) {
	d.requests.Add(uint64(k))
	d.groups.Add(1)
	d.procNS.Add(int64(k) * int64(each))
	if errs > 0 {
		d.errors.Add(uint64(errs))
		d.errMu.Lock()
		d.lastErr = lastErr
		d.errMu.Unlock()
	}
}

// stats is the door's micro.EndpointStats.
func (d *door) stats(data any) *micro.EndpointStats {
	n := d.requests.Load()
	proc := time.Duration(d.procNS.Load())
	st := &micro.EndpointStats{
		Name: d.name, Subject: d.subject, QueueGroup: micro.DefaultQueueGroup,
		NumRequests: int(n), NumErrors: int(d.errors.Load()), ProcessingTime: proc,
	}
	if n > 0 {
		st.AverageProcessingTime = proc / time.Duration(n)
	}
	d.errMu.Lock()
	st.LastError = d.lastErr
	d.errMu.Unlock()
	if data != nil {
		st.Data = mustJSON(data)
	}
	return st
}

// service is the node's doors, its discovery subscriptions and their
// workers.
type service struct {
	id      string
	started time.Time
	doors   []*door
	disco   []*nats.Subscription
	stop    chan struct{}
	wg      sync.WaitGroup
	stopped atomic.Bool
}

// startService opens the doors of check, check_batch and limiters, starts
// their workers and answers micro's discovery requests.
func (n *Node) startService(cfg Config) error {
	s := &service{id: nats.NewInbox()[len(nats.InboxPrefix):], started: time.Now().UTC(), stop: make(chan struct{})}
	n.svc = s
	workers := handlerCount(cfg)
	for _, k := range []kind{kindCheck, kindBatch, kindLimiters} {
		d := &door{kind: k, subject: k.subject(), name: k.endpoint(), ch: make(chan *nats.Msg, doorBuffer)}
		s.doors = append(s.doors, d)
		w := workers
		if k == kindLimiters {
			w = 1
		}
		for range w * subsPerWorker {
			sub, err := n.nc.ChanQueueSubscribe(d.subject, micro.DefaultQueueGroup, d.ch)
			if err != nil {
				return fmt.Errorf("flux-node: subscribe %s: %w", d.subject, err)
			}
			d.subs = append(d.subs, sub)
		}
		for range w {
			wk := newWorker(n, d)
			s.wg.Go(func() { wk.run(s.stop) })
		}
	}
	if err := n.startDiscovery(); err != nil {
		return err
	}
	// A round trip makes sure the server has every subscription before
	// Start returns, so the first request finds responders.
	if err := n.nc.FlushTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("flux-node: register service: %w", err)
	}
	return nil
}

// stopService drains the doors' and discovery subscriptions (every
// message NATS routed to them is received), then lets the workers answer
// what is queued and waits for them, or until ctx ends. n.mu is held.
func (n *Node) stopService(ctx context.Context) {
	s := n.svc
	if s == nil || s.stopped.Swap(true) {
		return
	}
	var subs []*nats.Subscription
	for _, d := range s.doors {
		subs = append(subs, d.subs...)
	}
	subs = append(subs, s.disco...)
	for _, sub := range subs {
		sub.Drain()
	}
	for _, sub := range subs {
		for sub.IsValid() && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	// The workers answer what the doors hold, then exit; publishing does
	// not block, so this ends even if the drain timed out.
	close(s.stop)
	s.wg.Wait()
}

// worker answers the requests of one door.
type worker struct {
	n     *Node
	d     *door
	msgs  []*nats.Msg
	slots []*handler // one per request of the current group
	live  []*handler // those with items to decide
	dec   decideScratch
	buf   []byte
}

func newWorker(n *Node, d *door) *worker {
	w := &worker{n: n, d: d, buf: make([]byte, 0, 256)}
	group := 1
	if d.kind == kindCheck {
		group = maxCoalesce
	}
	w.msgs = make([]*nats.Msg, 0, group)
	for range group {
		w.slots = append(w.slots, newHandler(n, d.kind))
	}
	return w
}

// next waits for the next message of the door; ok is false once the door
// is stopped and empty.
func (w *worker) next(stop chan struct{}) (*nats.Msg, bool) {
	select {
	case m := <-w.d.ch:
		return m, true
	default:
	}
	select {
	case m := <-w.d.ch:
		return m, true
	case <-stop:
		select {
		case m := <-w.d.ch:
			return m, true
		default:
			return nil, false
		}
	}
}

// run answers the door's requests until it is stopped and empty, taking
// every request waiting (up to the group size) at once.
func (w *worker) run(stop chan struct{}) {
	for {
		m, ok := w.next(stop)
		if !ok {
			return
		}
		msgs := append(w.msgs[:0], m)
	more:
		for len(msgs) < cap(msgs) {
			select {
			case m := <-w.d.ch:
				msgs = append(msgs, m)
			default:
				break more
			}
		}
		w.serve(msgs)
		clear(msgs)
	}
}
