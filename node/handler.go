package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/internal/wire"
	"github.com/fluxlimiter/flux/tracing"
)

// handler serves one subscription. A subscription delivers its messages one
// at a time, so a handler's scratch buffers are used by one goroutine at a
// time and need no pool or lock.
//
// Decoded keys alias the request's payload (nats.go gives each message its
// own buffer, and the limiter clones the keys it stores); the handler
// clears every reference to a payload before it returns.
type handler struct {
	n *Node

	buf  []byte    // reply
	item wire.Item // check

	items   []wire.Item // check_batch
	res     []result
	reqs    []flux.Request
	outs    []flux.Decision
	errs    []error
	idx     []int
	entries []*limiterEntry

	// sp is the server span of the request being answered (the zero Span
	// when tracing is off), set by serveCheck, serveBatch and runBatches
	// around check and batch; spans are checkMany's, one per message.
	sp    tracing.Span
	spans []tracing.Span
}

// result is one batch item's answer: a decision, or an error if e.Code != 0.
type result struct {
	entry *limiterEntry
	d     flux.Decision
	e     wire.ErrorBody
}

func newHandler(n *Node) *handler { return &handler{n: n, buf: make([]byte, 0, 256)} }

// limiterCtx is the context of limiter calls. It never ends: a call ends
// when the shard answers, when the mailbox stays full past OverloadWait, or
// when the limiter is closed (on shutdown, after the drain), so no
// per-request timer is needed, and the limiter may write decisions
// straight into the handler's slice.
var limiterCtx = context.Background()

func (h *handler) serveCheck(req micro.Request) {
	if h.n.handOff(req, SubjectCheck) { // cluster.go
		return
	}
	start := time.Now()
	if tr := h.n.tr; tr != nil {
		_, h.sp = tr.StartServer(context.Background(), SubjectCheck, req.Headers())
	}
	reply, e := h.check(req.Data())
	if e.Code != 0 {
		h.buf = h.n.respondError(req, e, h.buf)
	} else if err := req.Respond(reply); err != nil {
		h.n.log.Debug("respond", "error", err)
	}
	h.endSpan(e)
	h.n.met.ObserveRequest("check", time.Since(start))
}

func (h *handler) serveBatch(req micro.Request) {
	if h.n.handOff(req, SubjectCheckBatch) { // cluster.go
		return
	}
	start := time.Now()
	if tr := h.n.tr; tr != nil {
		_, h.sp = tr.StartServer(context.Background(), SubjectCheckBatch, req.Headers())
	}
	reply, e := h.batch(req.Data())
	if e.Code != 0 {
		h.buf = h.n.respondError(req, e, h.buf)
	} else if err := req.Respond(reply); err != nil {
		h.n.log.Debug("respond", "error", err)
	}
	h.endSpan(e)
	h.n.met.ObserveRequest("check_batch", time.Since(start))
}

// endSpan ends the request's span, marked failed if the request was
// answered with an error.
func (h *handler) endSpan(e wire.ErrorBody) {
	if h.sp.Span() == nil {
		return
	}
	spanError(h.sp, e)
	h.sp.End()
	h.sp = tracing.Span{}
}

// spanCheck records a check's limiter and cost (and its key with
// tracing.WithKeys, copied: keys alias the request's payload).
func spanCheck(sp tracing.Span, e *limiterEntry, it *wire.Item) {
	if sp.Recording() {
		sp.Check(e.name, strings.Clone(it.Key), int(it.Cost))
	}
}

// spanError records an error reply on sp.
func spanError(sp tracing.Span, e wire.ErrorBody) {
	if e.Code != 0 && sp.Recording() {
		sp.ErrorCode(strconv.Itoa(e.Code), e.Description)
	}
}

// check decides a flux.v1.check request: the reply body, or an error.
func (h *handler) check(data []byte) ([]byte, wire.ErrorBody) {
	n := h.n
	if len(data) > n.maxPayload {
		n.met.Error("", "413")
		return nil, tooLarge(len(data), n.maxPayload)
	}
	it := &h.item
	defer func() { *it = wire.Item{} }()
	if err := wire.DecodeCheck(data, it); err != nil {
		n.met.Error("", "400")
		return nil, wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonMalformed, Description: err.Error()}
	}
	e, eb := h.resolve(n.limiters.Load(), it)
	if eb.Code != 0 {
		if e != nil {
			h.sp.Limiter(e.name)
			n.met.Error(e.name, strconv.Itoa(eb.Code))
		} else {
			n.met.Error("", strconv.Itoa(eb.Code))
		}
		return nil, eb
	}
	spanCheck(h.sp, e, it)
	if co := n.clusterFor(e); co != nil {
		return h.checkCluster(co, e, it) // cluster.go
	}
	t0 := time.Now()
	d, err := e.lim.CheckN(limiterCtx, it.Key, int(it.Cost))
	n.met.ObserveCheck(e.name, time.Since(t0))
	h.sp.Result(d, err)
	if err != nil {
		eb := errorFor(err)
		n.met.Error(e.name, strconv.Itoa(eb.Code))
		return nil, eb
	}
	n.met.Decision(e.name, d.Allowed)
	h.buf = wire.AppendDecision(h.buf[:0], d)
	return h.buf, wire.ErrorBody{}
}

// resolve validates a decoded item and finds its limiter. The entry is
// returned with errors that concern a known limiter (for metrics).
func (h *handler) resolve(set *limiterSet, it *wire.Item) (*limiterEntry, wire.ErrorBody) {
	if it.Reason != "" {
		return nil, wire.ErrorBody{Code: wire.CodeBadRequest, Reason: it.Reason, Description: it.Desc}
	}
	if it.Limiter == "" {
		return nil, wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonInvalidRequest, Description: "missing limiter"}
	}
	e := set.byName[it.Limiter]
	if e == nil {
		return nil, wire.ErrorBody{Code: wire.CodeNotFound, Reason: wire.ReasonUnknownLimiter, Description: "unknown limiter " + quoteName(it.Limiter)}
	}
	switch {
	case it.Key == "":
		return e, wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonEmptyKey, Description: "missing or empty key"}
	case len(it.Key) > h.n.maxKeyLen:
		return e, wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonKeyTooLong,
			Description: fmt.Sprintf("key of %d bytes is longer than %d", len(it.Key), h.n.maxKeyLen)}
	case it.Cost > e.capacity:
		return e, wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonCostExceedsCapacity,
			Description: fmt.Sprintf("cost %d exceeds the capacity %d of limiter %s", it.Cost, e.capacity, quoteName(e.name))}
	}
	return e, wire.ErrorBody{}
}

func tooLarge(size, limit int) wire.ErrorBody {
	return wire.ErrorBody{Code: wire.CodeTooLarge, Reason: wire.ReasonTooLarge,
		Description: fmt.Sprintf("payload of %d bytes exceeds max_payload %d", size, limit)}
}

// batch decides a flux.v1.check_batch request. Items are grouped per
// limiter and each group is decided with one CheckBatchEach call; an item
// that fails carries its own error and the others are still answered.
func (h *handler) batch(data []byte) ([]byte, wire.ErrorBody) {
	n := h.n
	if len(data) > n.maxPayload {
		n.met.Error("", "413")
		return nil, tooLarge(len(data), n.maxPayload)
	}
	items, err := wire.DecodeBatch(data, h.items[:0], n.maxBatch)
	h.items = items
	// Entries past len(items) are zero already: clear what was used.
	defer func() { clear(h.items[:len(h.items)]) }()
	switch {
	case errors.Is(err, wire.ErrTooMany):
		n.met.Error("", "413")
		return nil, wire.ErrorBody{Code: wire.CodeTooLarge, Reason: wire.ReasonTooLarge,
			Description: fmt.Sprintf("batch holds more than max_batch %d requests", n.maxBatch)}
	case err != nil:
		n.met.Error("", "400")
		return nil, wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonMalformed, Description: err.Error()}
	}
	set := n.limiters.Load()
	res := h.growResults(len(items))
	entries := h.entries[:0]
	for i := range items {
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
	if h.sp.Recording() {
		h.spanBatch(entries, res)
	}
	clear(entries)

	b := append(h.buf[:0], `{"results":[`...)
	for i := range res {
		if i > 0 {
			b = append(b, ',')
		}
		if res[i].e.Code != 0 {
			b = wire.AppendErrorReply(b, res[i].e)
		} else {
			b = wire.AppendDecision(b, res[i].d)
		}
		res[i].entry = nil
	}
	b = append(b, "]}"...)
	h.buf = b
	return b, wire.ErrorBody{}
}

// spanBatch records a batch's size and decisions on its span, and its
// limiter when all its items name the same one.
func (h *handler) spanBatch(entries []*limiterEntry, res []result) {
	allowed, denied := 0, 0
	for i := range res {
		if res[i].e.Code == 0 {
			if res[i].d.Allowed {
				allowed++
			} else {
				denied++
			}
		}
	}
	if len(entries) == 1 {
		h.sp.Limiter(entries[0].name)
	}
	h.sp.Batch(len(res), allowed, denied)
}

// growItems returns the handler's item scratch resized to n. Its entries
// are zero: every user clears what it used.
func (h *handler) growItems(n int) []wire.Item {
	h.items = slices.Grow(h.items[:0], n)[:n]
	return h.items
}

// growResults returns the handler's result scratch resized to n.
func (h *handler) growResults(n int) []result {
	h.res = slices.Grow(h.res[:0], n)[:n]
	return h.res
}

// decideLocal runs the valid items of limiter e with one CheckBatchEach
// call (decide, in cluster.go, sends a non-local limiter's items through
// the cluster instead).
func (h *handler) decideLocal(e *limiterEntry, items []wire.Item, res []result) {
	reqs, idx := h.reqs[:0], h.idx[:0]
	for i := range items {
		if res[i].entry == e && res[i].e.Code == 0 {
			// The wire decodes a missing cost as 1, so a cost of 0 here was
			// written out: a peek.
			reqs = append(reqs, flux.Request{Key: items[i].Key, Cost: int(items[i].Cost), Peek: items[i].Cost == 0})
			idx = append(idx, i)
		}
	}
	h.reqs, h.idx = reqs, idx
	defer clear(h.reqs[:len(reqs)])
	if len(reqs) == 0 {
		return
	}
	outs := slices.Grow(h.outs[:0], len(reqs))[:len(reqs)]
	errs := slices.Grow(h.errs[:0], len(reqs))[:len(reqs)]
	h.outs, h.errs = outs, errs
	t0 := time.Now()
	var err error
	// A concurrent reload may shrink the capacity after resolve: the
	// limiter then refuses the whole call naming the item, which is
	// answered with its error and removed before trying again.
	for {
		clear(errs)
		err = e.lim.CheckBatchEach(limiterCtx, reqs, outs, errs)
		var be *flux.BatchError
		if !errors.As(err, &be) || be.Index < 0 || be.Index >= len(reqs) {
			break
		}
		res[idx[be.Index]].e = errorFor(be.Err)
		h.n.met.Error(e.name, strconv.Itoa(res[idx[be.Index]].e.Code))
		reqs = slices.Delete(reqs, be.Index, be.Index+1)
		idx = slices.Delete(idx, be.Index, be.Index+1)
		outs, errs = outs[:len(reqs)], errs[:len(reqs)]
		if len(reqs) == 0 {
			return
		}
	}
	h.n.met.ObserveCheck(e.name, time.Since(t0))
	if err != nil {
		eb := errorFor(err)
		for _, i := range idx {
			res[i].e = eb
		}
		h.n.met.Error(e.name, strconv.Itoa(eb.Code))
		return
	}
	allowed, denied := 0, 0
	for j, i := range idx {
		if errs[j] != nil {
			res[i].e = errorFor(errs[j])
			h.n.met.Error(e.name, strconv.Itoa(res[i].e.Code))
			continue
		}
		res[i].d = outs[j]
		if outs[j].Allowed {
			allowed++
		} else {
			denied++
		}
	}
	h.n.met.Decisions(e.name, allowed, denied)
}
