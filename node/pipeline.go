package node

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux/cluster"
	"github.com/fluxlimiter/flux/internal/wire"
	"github.com/fluxlimiter/flux/protocol"
	"github.com/fluxlimiter/flux/tracing"
)

// The request pipeline (see the package doc): every request enters
// through its subject's door (door.go) and goes
//
//	decode → resolve → decide → encode → reply → observe
//
// in the worker that took it, together with the requests waiting with it:
// their items are decided by one decider call per limiter.

// kind is a request kind, one per subject.
type kind uint8

const (
	kindCheck    kind = iota // flux.v1.check: one item
	kindBatch                // flux.v1.check_batch: a list of items
	kindLimiters             // flux.v1.limiters: no item
)

func (k kind) subject() string {
	return [...]string{protocol.SubjectCheck, protocol.SubjectCheckBatch, protocol.SubjectLimiters}[k]
}

// endpoint is the endpoint's name in $SRV.INFO and in metrics
// (flux_request_duration_seconds).
func (k kind) endpoint() string {
	return [...]string{"check", "check_batch", "limiters"}[k]
}

// result is one item's answer: a decision, or an error if e.Code != 0.
type result struct {
	entry *limiterEntry
	d     cluster.Answer
	e     wire.ErrorBody
}

// handler holds one request while a worker answers it: its items, their
// answers and its reply. A worker has a handler per request it takes at
// once and uses them one group at a time, so they need no lock.
//
// Decoded keys alias the request's payload (nats.go gives each message its
// own buffer, and the limiter clones the keys it stores); release clears
// every reference to a payload once the request is answered.
type handler struct {
	n    *Node
	kind kind

	buf   []byte      // the reply
	items []wire.Item // the request's items
	res   []result    // their answers
	eb    wire.ErrorBody
	sp    tracing.Span
}

func newHandler(n *Node, k kind) *handler {
	return &handler{n: n, kind: k, buf: make([]byte, 0, 256)}
}

// limiterCtx is the context of limiter calls. It never ends: a call ends
// when the shard answers, when the mailbox stays full past OverloadWait, or
// when the limiter is closed (on shutdown, after the drain), so no
// per-request timer is needed, and the limiter may write decisions
// straight into the handler's slices.
var limiterCtx = context.Background()

// serve answers a group of requests taken together from w's door.
func (w *worker) serve(msgs []*nats.Msg) {
	n := w.n
	start := time.Now()
	hs := w.slots[:len(msgs)]
	live := w.live[:0]
	for i, m := range msgs {
		h := hs[i]
		if tr := n.tr; tr != nil && h.kind != kindLimiters {
			_, h.sp = tr.StartServer(context.Background(), h.kind.subject(), m.Header)
		}
		if h.eb = h.decode(m.Data); h.eb.Code == 0 && h.kind != kindLimiters {
			h.resolve()
			live = append(live, h)
		}
	}
	n.decideBatch(&w.dec, live)
	clear(live)
	w.live = live[:0]
	errs, lastErr := 0, ""
	for i, m := range msgs {
		h := hs[i]
		body, eb := h.answer()
		w.buf = n.reply(m, w.buf, body, eb)
		if eb.Code != 0 {
			errs, lastErr = errs+1, eb.Description
		}
		h.eb = eb
	}
	each := time.Since(start)
	w.d.record(len(msgs), errs, lastErr, each)
	for _, h := range hs {
		n.obs.answered(h.kind, each, h.sp, h.items, h.res, h.eb)
		h.release()
	}
}

// answer is the request's reply body, or the error that answers the whole
// request.
func (h *handler) answer() ([]byte, wire.ErrorBody) {
	switch {
	case h.eb.Code != 0:
		return nil, h.eb
	case h.kind == kindLimiters:
		return h.n.limiters.Load().info, wire.ErrorBody{}
	case h.kind == kindCheck && h.res[0].e.Code != 0:
		return nil, h.res[0].e // a single check's error answers the request
	}
	return h.encode(), wire.ErrorBody{}
}

// release clears every reference to the payload and to limiters.
func (h *handler) release() {
	clear(h.items)
	clear(h.res)
	h.items, h.res = h.items[:0], h.res[:0]
	h.eb, h.sp = wire.ErrorBody{}, tracing.Span{}
}

// decode reads the request into h.items.
func (h *handler) decode(data []byte) wire.ErrorBody {
	n := h.n
	if len(data) > n.maxPayload {
		return errTooLarge(len(data), n.maxPayload)
	}
	if h.kind == kindLimiters {
		return wire.ErrorBody{}
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
	// The items of a batch usually share one limiter: look its name up
	// once per run of equal names rather than once per item.
	var name string
	var entry *limiterEntry
	for i := range h.items {
		it := &h.items[i]
		if entry == nil || it.Limiter != name {
			name, entry = it.Limiter, set.byName[it.Limiter]
		}
		e, eb := h.n.validate(entry, it)
		h.res[i] = result{entry: e, e: eb}
	}
}

// validate checks a decoded item against e, the limiter its name finds
// (nil if none).
func (n *Node) validate(e *limiterEntry, it *wire.Item) (*limiterEntry, wire.ErrorBody) {
	if it.Reason != "" {
		return nil, errItem(it)
	}
	if it.Limiter == "" {
		return nil, errMissingLimiter()
	}
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
