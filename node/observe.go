package node

import (
	"strings"
	"time"

	"github.com/fluxlimiter/flux/cluster"
	"github.com/fluxlimiter/flux/internal/wire"
	"github.com/fluxlimiter/flux/metrics"
	"github.com/fluxlimiter/flux/tracing"
)

// observer records the pipeline's metrics and spans from its results: the
// steps themselves record nothing. decided is called once per decider
// call, answered once per request after its reply. Safe for simultaneous
// use.
type observer struct{ met *metrics.Metrics }

// decided records one decider call for limiter e: its duration, its
// decisions and, for a clustered limiter, where each came from.
func (o observer) decided(e *limiterEntry, took time.Duration, clustered bool, out []cluster.Answer, errs []error, err error) {
	o.met.ObserveCheck(e.name, took)
	if err != nil {
		return
	}
	allowed, denied := 0, 0
	var paths [3]int
	for j := range out {
		if errs[j] != nil {
			continue
		}
		if out[j].Allowed {
			allowed++
		} else {
			denied++
		}
		if p := int(out[j].Path); p < len(paths) {
			paths[p]++
		}
	}
	o.met.Decisions(e.name, allowed, denied)
	if clustered {
		for p, c := range paths {
			path := cluster.Path(p).String()
			for range c {
				o.met.Answer(e.name, path)
			}
		}
	}
}

// answered records one answered request: its errors (eb for the whole
// request, or each item's), its duration, and its span, which it ends.
func (o observer) answered(k kind, took time.Duration, sp tracing.Span, items []wire.Item, res []result, eb wire.ErrorBody) {
	if len(res) == 0 && eb.Code != 0 {
		o.met.Error("", codeString(eb.Code))
	}
	allowed, denied := 0, 0
	var one *limiterEntry // the limiter of every decided item, if they share one
	mixed := false
	for i := range res {
		r := &res[i]
		if r.e.Code != 0 {
			o.met.Error(entryName(r.entry), codeString(r.e.Code))
			continue
		}
		if r.d.Allowed {
			allowed++
		} else {
			denied++
		}
		if one == nil {
			one = r.entry
		} else if r.entry != one {
			mixed = true
		}
	}
	if mixed {
		one = nil
	}
	o.met.ObserveRequest(k.endpoint(), took)
	if sp.Span() == nil {
		return
	}
	switch {
	case k == kindBatch:
		if one != nil {
			sp.Limiter(one.name)
		}
		if eb.Code == 0 {
			sp.Batch(len(res), allowed, denied)
		}
	case len(res) == 1 && res[0].e.Code == 0:
		if sp.Recording() {
			// Copied: keys alias the request's payload.
			sp.Check(res[0].entry.name, strings.Clone(items[0].Key), int(items[0].Cost))
		}
		sp.Result(res[0].d.Decision, nil)
	case len(res) == 1 && res[0].entry != nil:
		sp.Limiter(res[0].entry.name)
	}
	if eb.Code != 0 && sp.Recording() {
		sp.ErrorCode(codeString(eb.Code), eb.Description)
	}
	sp.End()
}

func entryName(e *limiterEntry) string {
	if e == nil {
		return ""
	}
	return e.name
}
