package node

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fluxlimiter/flux/internal/wire"
	"github.com/fluxlimiter/flux/tracing"
)

// Lanes are the node's fast path. Besides its micro endpoint, each of
// check and check_batch has several plain queue subscriptions in the
// micro queue group that feed one Go channel (a "lane"), read by a pool of
// worker goroutines. The micro endpoint keeps discovery and $SRV.STATS
// working and answers its share of requests; the lanes answer the rest
// without micro's per-request allocations and lock, and a check worker
// takes every request waiting in its lane at once and decides them with
// one CheckBatchEach call: under load, single checks cost what batched
// checks cost (one shard message per shard, not one per check).
//
// Replies are published from the workers; nothing is answered after the
// connection closes, since Shutdown drains the lanes' subscriptions, then
// lets the workers empty the lanes, then drains the connection.

const (
	// laneBuffer is each lane's capacity in messages; a full lane drops
	// messages as a NATS slow consumer would (the client times out).
	laneBuffer = 1 << 16
	// maxCoalesce bounds the checks a worker decides together.
	maxCoalesce = 64
	// laneSubsPer is the lane subscriptions per worker.
	laneSubsPer = 4
)

// laneStats count requests answered by the lanes (micro counts its own).
type laneStats struct {
	requests atomic.Uint64
	errors   atomic.Uint64
	groups   atomic.Uint64 // checkMany calls: requests/groups is the coalescing achieved
}

// startLanes subscribes the lanes and starts their workers.
func (n *Node) startLanes(cfg Config) error {
	h := handlerCount(cfg)
	stop := make(chan struct{})
	n.lanesStop = stop
	for _, lane := range []struct {
		subject string
		run     func(*handler, chan *nats.Msg, chan struct{})
	}{
		{SubjectCheck, (*handler).runChecks},
		{SubjectCheckBatch, (*handler).runBatches},
	} {
		ch := make(chan *nats.Msg, laneBuffer)
		n.cl.lane(lane.subject).Store(&ch) // cluster.go: handOff
		// Queue members are picked at random: with laneSubsPer subscriptions
		// per worker, the micro endpoint gets a small share of requests.
		for range h * laneSubsPer {
			sub, err := n.nc.ChanQueueSubscribe(lane.subject, micro.DefaultQueueGroup, ch)
			if err != nil {
				return fmt.Errorf("flux-node: subscribe %s: %w", lane.subject, err)
			}
			n.laneSubs = append(n.laneSubs, sub)
		}
		for range h {
			w := newHandler(n)
			n.lanesWG.Go(func() { lane.run(w, ch, stop) })
		}
	}
	return nil
}

// stopLanes drains the lanes' subscriptions (every message NATS routed to
// them is received), then lets the workers answer what is queued and
// waits for them, or until ctx ends. n.mu is held.
func (n *Node) stopLanes(ctx context.Context) {
	if n.lanesStop == nil {
		return
	}
	for _, sub := range n.laneSubs {
		sub.Drain()
	}
	for _, sub := range n.laneSubs {
		for sub.IsValid() && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	// The workers answer what the lanes hold, then exit; publishing does
	// not block, so this ends even if the drain timed out.
	close(n.lanesStop)
	n.lanesWG.Wait()
	n.laneSubs = nil
	n.lanesStop = nil
}

// next waits for the next message of a lane; ok is false once the lane is
// stopped and empty.
func (h *handler) next(ch chan *nats.Msg, stop chan struct{}) (*nats.Msg, bool) {
	select {
	case m := <-ch:
		return m, true
	default:
	}
	select {
	case m := <-ch:
		return m, true
	case <-stop:
		select {
		case m := <-ch:
			return m, true
		default:
			return nil, false
		}
	}
}

// runChecks is a check worker: it takes all the requests waiting in its
// lane (up to maxCoalesce) and answers them together.
func (h *handler) runChecks(ch chan *nats.Msg, stop chan struct{}) {
	msgs := make([]*nats.Msg, 0, maxCoalesce)
	for {
		m, ok := h.next(ch, stop)
		if !ok {
			return
		}
		msgs = append(msgs[:0], m)
	more:
		for len(msgs) < maxCoalesce {
			select {
			case m := <-ch:
				msgs = append(msgs, m)
			default:
				break more
			}
		}
		h.checkMany(msgs)
		clear(msgs)
	}
}

// runBatches is a check_batch worker.
func (h *handler) runBatches(ch chan *nats.Msg, stop chan struct{}) {
	for {
		m, ok := h.next(ch, stop)
		if !ok {
			return
		}
		start := time.Now()
		if tr := h.n.tr; tr != nil {
			_, h.sp = tr.StartServer(context.Background(), SubjectCheckBatch, m.Header)
		}
		reply, e := h.batch(m.Data)
		h.publish(m, reply, e)
		h.endSpan(e)
		h.n.lanes.requests.Add(1)
		h.n.met.ObserveRequest("check_batch", time.Since(start))
	}
}

// checkMany answers several check requests, deciding the valid ones with
// one CheckBatchEach call per limiter.
func (h *handler) checkMany(msgs []*nats.Msg) {
	n := h.n
	start := time.Now()
	var spans []tracing.Span
	if tr := n.tr; tr != nil {
		// One server span per request, each a child of its own sender's.
		spans = slices.Grow(h.spans[:0], len(msgs))[:len(msgs)]
		h.spans = spans
		for i, m := range msgs {
			_, spans[i] = tr.StartServer(context.Background(), SubjectCheck, m.Header)
		}
	}
	set := n.limiters.Load()
	items := h.growItems(len(msgs))
	res := h.growResults(len(msgs))
	entries := h.entries[:0]
	for i, m := range msgs {
		res[i] = result{}
		if len(m.Data) > n.maxPayload {
			res[i].e = tooLarge(len(m.Data), n.maxPayload)
			n.met.Error("", "413")
			continue
		}
		if err := wire.DecodeCheck(m.Data, &items[i]); err != nil {
			res[i].e = wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonMalformed, Description: err.Error()}
			n.met.Error("", "400")
			continue
		}
		e, eb := h.resolve(set, &items[i])
		res[i] = result{entry: e, e: eb}
		if eb.Code != 0 {
			n.met.Error(entryName(e), strconv.Itoa(eb.Code))
			continue
		}
		if !containsEntry(entries, e) {
			entries = append(entries, e)
		}
	}
	h.entries = entries
	for _, e := range entries {
		h.decide(e, items, res)
	}
	clear(entries)
	for i, m := range msgs {
		if res[i].e.Code != 0 {
			h.publish(m, nil, res[i].e)
		} else {
			h.buf = wire.AppendDecision(h.buf[:0], res[i].d)
			h.publish(m, h.buf, wire.ErrorBody{})
		}
		if spans != nil {
			endCheckSpan(spans[i], &res[i], &items[i])
		}
		res[i].entry = nil
	}
	clear(spans)
	clear(items)
	d := time.Since(start)
	for range msgs {
		n.met.ObserveRequest("check", d)
	}
	n.lanes.requests.Add(uint64(len(msgs)))
	n.lanes.groups.Add(1)
}

// endCheckSpan records a lane's check on its span and ends it.
func endCheckSpan(sp tracing.Span, r *result, it *wire.Item) {
	switch {
	case r.e.Code == 0:
		spanCheck(sp, r.entry, it)
		sp.Result(r.d, nil)
	case r.entry != nil:
		sp.Limiter(r.entry.name)
		fallthrough
	default:
		spanError(sp, r.e)
	}
	sp.End()
}

func containsEntry(es []*limiterEntry, e *limiterEntry) bool {
	for _, x := range es {
		if x == e {
			return true
		}
	}
	return false
}

func entryName(e *limiterEntry) string {
	if e == nil {
		return ""
	}
	return e.name
}

// publish sends a lane's reply: the body, or an error with micro's
// headers and a JSON body.
func (h *handler) publish(m *nats.Msg, reply []byte, e wire.ErrorBody) {
	if m.Reply == "" {
		return
	}
	var err error
	if e.Code == 0 {
		err = h.n.nc.Publish(m.Reply, reply)
	} else {
		h.n.lanes.errors.Add(1)
		h.buf = wire.AppendErrorReply(h.buf[:0], e)
		err = h.n.nc.PublishMsg(&nats.Msg{
			Subject: m.Reply,
			Header: nats.Header{
				micro.ErrorHeader:     []string{headerSafe(e.Description)},
				micro.ErrorCodeHeader: []string{strconv.Itoa(e.Code)},
			},
			Data: h.buf,
		})
	}
	if err != nil {
		h.n.log.Debug("reply", "error", err)
	}
}

// headerSafe keeps a header value on one line.
func headerSafe(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	}
	return s
}
