// Package tracing starts Flux's OpenTelemetry spans at its boundaries: an
// HTTP request checked by httplimit, a flux-node request handler, and the Go
// client's request to a node, with the W3C trace context carried from
// client to node in NATS message headers. No span is ever started inside a
// shard.
//
// Tracing is off unless a Tracer is built from a real TracerProvider: New
// returns nil for a nil provider, for a no-op provider, and for the global
// provider while no SDK has been installed with otel.SetTracerProvider.
// Every method of a nil *Tracer, and of the zero Span it returns, does
// nothing and allocates nothing, so a boundary with tracing off pays one
// nil check instead of the ~150 ns and 3 allocations of a no-op span.
//
// Attributes are domain-first: ratelimit.limiter, ratelimit.decision
// ("allowed" or "denied"), ratelimit.remaining, ratelimit.limit,
// ratelimit.cost, ratelimit.retry_after and ratelimit.reset_after (seconds).
// The raw client key is recorded, as ratelimit.key, only with WithKeys.
package tracing

import (
	"context"
	"reflect"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/fluxlimiter/flux"
)

// ScopeName is the instrumentation scope of Flux's spans.
const ScopeName = "github.com/fluxlimiter/flux"

// Attribute keys.
const (
	AttrLimiter    = attribute.Key("ratelimit.limiter")
	AttrDecision   = attribute.Key("ratelimit.decision")
	AttrRemaining  = attribute.Key("ratelimit.remaining")
	AttrLimit      = attribute.Key("ratelimit.limit")
	AttrCost       = attribute.Key("ratelimit.cost")
	AttrRetryAfter = attribute.Key("ratelimit.retry_after")
	AttrResetAfter = attribute.Key("ratelimit.reset_after")
	AttrKey        = attribute.Key("ratelimit.key")
	AttrBatchSize  = attribute.Key("ratelimit.batch.size")
	AttrAllowed    = attribute.Key("ratelimit.batch.allowed")
	AttrDenied     = attribute.Key("ratelimit.batch.denied")
	AttrErrorCode  = attribute.Key("ratelimit.error.code")
)

// Tracer starts Flux's boundary spans. Build it with New; a nil *Tracer is
// valid and starts nothing. It is safe for simultaneous use.
type Tracer struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	keys   bool
}

// Option configures a Tracer.
type Option func(*Tracer)

// WithPropagator sets how trace context travels in message and HTTP
// headers (default: W3C Trace Context, propagation.TraceContext{}).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(t *Tracer) {
		if p != nil {
			t.prop = p
		}
	}
}

// WithKeys records the raw client key as the span attribute ratelimit.key.
// Off by default: keys are often personal data (IP addresses, user ids).
func WithKeys() Option { return func(t *Tracer) { t.keys = true } }

// New returns a Tracer that starts spans with tp, or nil (tracing off) if
// tp is nil, a no-op provider, or the otel global provider before an SDK
// was installed with otel.SetTracerProvider (call New after installing it).
func New(tp trace.TracerProvider, opts ...Option) *Tracer {
	if !Enabled(tp) {
		return nil
	}
	t := &Tracer{tracer: tp.Tracer(ScopeName), prop: propagation.TraceContext{}}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Enabled reports whether tp would record anything: false for nil, for the
// no-op providers, and for the otel global provider while no SDK is set.
func Enabled(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case nil, noop.TracerProvider, *noop.TracerProvider:
		return false
	}
	// The global provider's default is an unexported delegating type that
	// behaves as a no-op until otel.SetTracerProvider is called; once it is,
	// otel.GetTracerProvider returns the installed provider itself.
	switch reflect.TypeOf(tp).String() {
	case "*global.tracerProvider", "trace.noopTracerProvider":
		return false
	}
	return true
}

// Propagator returns the propagator the Tracer injects and extracts with.
func (t *Tracer) Propagator() propagation.TextMapPropagator {
	if t == nil {
		return nil
	}
	return t.prop
}

// Start starts a span of the given kind as a child of ctx's span. The
// returned Span must be ended.
func (t *Tracer) Start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	ctx, s := t.tracer.Start(ctx, name, trace.WithSpanKind(kind))
	return ctx, Span{s: s, keys: t.keys}
}

// StartServer starts a server span for a request that arrived with the
// headers h (a nats.Header or micro.Headers), whose parent is the trace
// context the sender injected. flux-node's handlers call it with
// req.Headers().
func (t *Tracer) StartServer(ctx context.Context, name string, h map[string][]string) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	if len(h) > 0 {
		ctx = t.prop.Extract(ctx, HeaderCarrier(h))
	}
	ctx, s := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("messaging.system", "nats")))
	return ctx, Span{s: s, keys: t.keys}
}

// StartClient starts a client span for a request about to be sent with
// the headers h (msg.Header of a message made by nats.NewMsg, which has
// one), and injects the span's trace context into h, so the node's server
// span becomes its child. With a nil h nothing is injected.
func (t *Tracer) StartClient(ctx context.Context, name string, h map[string][]string) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	ctx, s := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("messaging.system", "nats")))
	if h != nil {
		t.prop.Inject(ctx, HeaderCarrier(h))
	}
	return ctx, Span{s: s, keys: t.keys}
}

// Inject writes ctx's trace context into h.
func (t *Tracer) Inject(ctx context.Context, h map[string][]string) {
	if t == nil || h == nil {
		return
	}
	t.prop.Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx with the trace context found in carrier (such as
// propagation.HeaderCarrier(r.Header)) as its remote parent.
func (t *Tracer) Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	if t == nil {
		return ctx
	}
	return t.prop.Extract(ctx, carrier)
}

// CheckHooks returns flux.Hooks (for flux.WithHooks) that record each
// check of the limiter named limiter as a span "ratelimit.check", but only
// inside a trace that is already being recorded (a sampled HTTP or RPC
// span in the check's context): the library never starts a trace of its
// own, and a check outside a sampled trace costs one context lookup. The
// span is recorded when the check returns, spanning the time it took, so
// it covers batches (one span per item) and async checks as well. With a
// nil t the hooks are empty, which flux.WithHooks ignores.
func (t *Tracer) CheckHooks(limiter string) flux.Hooks {
	if t == nil {
		return flux.Hooks{}
	}
	record := func(ctx context.Context, key string, cost int, d flux.Decision, err error, latency time.Duration) {
		if !trace.SpanFromContext(ctx).IsRecording() {
			return
		}
		end := time.Now()
		_, s := t.tracer.Start(ctx, "ratelimit.check", trace.WithSpanKind(trace.SpanKindInternal), trace.WithTimestamp(end.Add(-latency)))
		sp := Span{s: s, keys: t.keys}
		sp.Check(limiter, key, cost)
		sp.Result(d, err)
		s.End(trace.WithTimestamp(end))
	}
	return flux.Hooks{
		AfterCheck: func(ctx context.Context, key string, cost int, d flux.Decision, latency time.Duration) {
			record(ctx, key, cost, d, nil, latency)
		},
		OnError: func(ctx context.Context, key string, cost int, err error, latency time.Duration) {
			record(ctx, key, cost, flux.Decision{}, err, latency)
		},
	}
}

// CheckMiddleware returns a flux.Middleware that records each single check
// of the limiter named limiter as a span "ratelimit.check", inside a trace
// already being recorded. It returns nil when t is nil.
//
// Deprecated: use CheckHooks with flux.WithHooks: flux.Middleware is
// deprecated, and skipped batches and async checks.
func (t *Tracer) CheckMiddleware(limiter string) flux.Middleware {
	if t == nil {
		return nil
	}
	return func(next flux.CheckFunc) flux.CheckFunc {
		return func(ctx context.Context, key string, cost int) (flux.Decision, error) {
			if !trace.SpanFromContext(ctx).IsRecording() {
				return next(ctx, key, cost)
			}
			ctx, sp := t.Start(ctx, "ratelimit.check", trace.SpanKindInternal)
			sp.Check(limiter, key, cost)
			d, err := next(ctx, key, cost)
			sp.Result(d, err)
			sp.End()
			return d, err
		}
	}
}

// Span is a span started by a Tracer. The zero Span (tracing off) does
// nothing. Like trace.Span, it is safe for simultaneous use.
type Span struct {
	s    trace.Span
	keys bool
}

// Recording reports whether the span records attributes; callers can skip
// preparing attributes when it does not.
func (s Span) Recording() bool { return s.s != nil && s.s.IsRecording() }

// Span returns the OpenTelemetry span, or nil when tracing is off.
func (s Span) Span() trace.Span { return s.s }

// Check records what is being checked: the limiter, the key (only with
// WithKeys) and the cost.
func (s Span) Check(limiter, key string, cost int) {
	if !s.Recording() {
		return
	}
	if s.keys {
		s.s.SetAttributes(AttrLimiter.String(limiter), AttrKey.String(key), AttrCost.Int(cost))
		return
	}
	s.s.SetAttributes(AttrLimiter.String(limiter), AttrCost.Int(cost))
}

// Limiter records the limiter's name.
func (s Span) Limiter(name string) {
	if s.Recording() {
		s.s.SetAttributes(AttrLimiter.String(name))
	}
}

// Result records a check's outcome: the decision's fields, or the error. A
// denial is not an error: it leaves the span's status unset.
func (s Span) Result(d flux.Decision, err error) {
	if !s.Recording() {
		return
	}
	if err != nil {
		s.Error(err)
		return
	}
	dec := "denied"
	if d.Allowed {
		dec = "allowed"
	}
	s.s.SetAttributes(
		AttrDecision.String(dec),
		AttrRemaining.Int(d.Remaining),
		AttrLimit.Int(d.Limit),
		AttrRetryAfter.Float64(d.RetryAfter.Seconds()),
		AttrResetAfter.Float64(d.ResetAfter.Seconds()),
	)
}

// Batch records a batch's size and how many of its items were allowed and
// denied.
func (s Span) Batch(size, allowed, denied int) {
	if s.Recording() {
		s.s.SetAttributes(AttrBatchSize.Int(size), AttrAllowed.Int(allowed), AttrDenied.Int(denied))
	}
}

// Error marks the span as failed with err.
func (s Span) Error(err error) {
	if err == nil || !s.Recording() {
		return
	}
	s.s.RecordError(err)
	s.s.SetStatus(codes.Error, err.Error())
}

// ErrorCode marks the span as failed with a reply code (such as flux-node's
// "404") and its description.
func (s Span) ErrorCode(code, description string) {
	if !s.Recording() {
		return
	}
	s.s.SetAttributes(AttrErrorCode.String(code))
	s.s.SetStatus(codes.Error, description)
}

// End ends the span.
func (s Span) End() {
	if s.s != nil {
		s.s.End()
	}
}

// HeaderCarrier adapts NATS message headers (nats.Header, micro.Headers)
// to propagation.TextMapCarrier. NATS headers are case-sensitive; Get
// tries the exact key first and then ignores case, so a "Traceparent" set
// by another client is found too. Like the map it wraps, it is not safe
// for simultaneous writes; NATS handlers each get their own headers.
type HeaderCarrier map[string][]string

// Get returns the first value of key.
func (h HeaderCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set sets key to the single value v.
func (h HeaderCarrier) Set(key, v string) { h[key] = []string{v} }

// Keys lists the keys present.
func (h HeaderCarrier) Keys() []string {
	ks := make([]string, 0, len(h))
	for k := range h {
		ks = append(ks, k)
	}
	return ks
}
