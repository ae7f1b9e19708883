package node

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/fluxlimiter/flux/cluster"
	"github.com/fluxlimiter/flux/internal/wire"
	"github.com/fluxlimiter/flux/tracing"
)

// The request pipeline (see the package doc): every check and check_batch
// request enters through a micro endpoint and goes
//
//	decode → resolve → decide (coalesced) → encode → reply → observe
//
// in the goroutine micro calls Handle in, which replies before it returns.

// kind is a request kind, one per subject.
type kind uint8

const (
	kindCheck kind = iota // flux.v1.check: one item
	kindBatch             // flux.v1.check_batch: a list of items
)

func (k kind) subject() string {
	if k == kindCheck {
		return SubjectCheck
	}
	return SubjectCheckBatch
}

// endpoint is the endpoint's name in metrics (flux_node_request_duration_seconds).
func (k kind) endpoint() string {
	if k == kindCheck {
		return "check"
	}
	return "check_batch"
}

// result is one item's answer: a decision, or an error if e.Code != 0.
type result struct {
	entry *limiterEntry
	d     cluster.Answer
	e     wire.ErrorBody
}

// handler serves the requests of one micro endpoint. micro delivers an
// endpoint's requests one at a time, so a handler's scratch is used by
// one request at a time and needs no lock; while its request waits in the
// coalescer, the handler that leads the batch reads its items and writes
// its results (the coalescer's lock and wake-up order those accesses).
//
// Decoded keys alias the request's payload (nats.go gives each message its
// own buffer, and the limiter clones the keys it stores); the handler
// clears every reference to a payload before Handle returns.
type handler struct {
	n    *Node
	kind kind

	buf   []byte      // the reply
	items []wire.Item // the request's items
	res   []result    // their answers
	call  call        // the request's place in the coalescer
	dec   decideScratch
}

func newHandler(n *Node, k kind) *handler {
	h := &handler{n: n, kind: k, buf: make([]byte, 0, 256)}
	h.call.init(h)
	return h
}

// limiterCtx is the context of limiter calls. It never ends: a call ends
// when the shard answers, when the mailbox stays full past OverloadWait, or
// when the limiter is closed (on shutdown, after the drain), so no
// per-request timer is needed, and the limiter may write decisions
// straight into the handler's slices.
var limiterCtx = context.Background()

// Handle answers one request, inside Handle as micro requires.
func (h *handler) Handle(req micro.Request) {
	n := h.n
	start := time.Now()
	var sp tracing.Span
	if tr := n.tr; tr != nil {
		_, sp = tr.StartServer(context.Background(), h.kind.subject(), req.Headers())
	}
	body, eb := h.serve(req.Data())
	h.buf = n.reply(req, h.buf, body, eb)
	n.obs.answered(h.kind, start, sp, h.items, h.res, eb)
	h.release()
}

// serve runs the pipeline on one request's payload and returns the reply
// body, or the error that answers the whole request.
func (h *handler) serve(data []byte) ([]byte, wire.ErrorBody) {
	if eb := h.decode(data); eb.Code != 0 {
		return nil, eb
	}
	h.resolve()
	h.n.coal.do(&h.call)
	if h.kind == kindCheck && h.res[0].e.Code != 0 {
		return nil, h.res[0].e // a single check's error answers the request
	}
	return h.encode(), wire.ErrorBody{}
}

// release clears every reference to the payload and to limiters.
func (h *handler) release() {
	clear(h.items)
	clear(h.res)
	h.items, h.res = h.items[:0], h.res[:0]
}

// decode reads the request into h.items.
func (h *handler) decode(data []byte) wire.ErrorBody {
	n := h.n
	if len(data) > n.maxPayload {
		return errTooLarge(len(data), n.maxPayload)
	}
	if h.kind == kindCheck {
		h.items = slices.Grow(h.items[:0], 1)[:1]
		if err := wire.DecodeCheck(data, &h.items[0]); err != nil {
			return errMalformed(err)
		}
		return wire.ErrorBody{}
	}
	items, err := wire.DecodeBatch(data, h.items[:0], n.maxBatch)
	h.items = items
	switch {
	case errors.Is(err, wire.ErrTooMany):
		return errTooMany(n.maxBatch)
	case err != nil:
		return errMalformed(err)
	}
	return wire.ErrorBody{}
}

// resolve finds each item's limiter and validates the item against it:
// the one place where a request's limiter, key and cost are checked. An
// item that fails carries its error; the entry is kept with errors that
// concern a known limiter (for metrics).
func (h *handler) resolve() {
	set := h.n.limiters.Load()
	h.res = slices.Grow(h.res[:0], len(h.items))[:len(h.items)]
	for i := range h.items {
		e, eb := h.n.validate(set, &h.items[i])
		h.res[i] = result{entry: e, e: eb}
	}
}

// validate checks a decoded item and finds its limiter.
func (n *Node) validate(set *limiterSet, it *wire.Item) (*limiterEntry, wire.ErrorBody) {
	if it.Reason != "" {
		return nil, errItem(it)
	}
	if it.Limiter == "" {
		return nil, errMissingLimiter()
	}
	e := set.byName[it.Limiter]
	switch {
	case e == nil:
		return nil, errUnknownLimiter(it.Limiter)
	case it.Key == "":
		return e, errEmptyKey()
	case len(it.Key) > n.maxKeyLen:
		return e, errKeyTooLong(len(it.Key), n.maxKeyLen)
	case it.Cost > e.capacity:
		return e, errCostAboveCapacity(it.Cost, e)
	}
	return e, wire.ErrorBody{}
}

// encode writes the reply body of a decided request.
func (h *handler) encode() []byte {
	if h.kind == kindCheck {
		h.buf = wire.AppendDecision(h.buf[:0], h.res[0].d.Decision)
		return h.buf
	}
	b := append(h.buf[:0], `{"results":[`...)
	for i := range h.res {
		if i > 0 {
			b = append(b, ',')
		}
		if h.res[i].e.Code != 0 {
			b = wire.AppendErrorReply(b, h.res[i].e)
		} else {
			b = wire.AppendDecision(b, h.res[i].d.Decision)
		}
	}
	h.buf = append(b, "]}"...)
	return h.buf
}

// quoteName quotes a caller-chosen name for an error description, cut to
// 64 bytes.
func quoteName(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}
