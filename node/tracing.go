package node

import (
	"go.opentelemetry.io/otel/trace"

	"github.com/fluxlimiter/flux/tracing"
)

// Option configures a Node with what a configuration file cannot hold,
// such as a TracerProvider. Pass options to New.
type Option func(*Node)

// WithTracerProvider makes the node start an OpenTelemetry server span for
// every flux.v1.check and flux.v1.check_batch request, named after the
// subject, as a child of the trace context the sender put in the
// message's headers (W3C traceparent; the Go client does it when given
// client.WithTracerProvider). A check's span records the limiter, the cost
// and the decision (ratelimit.limiter, ratelimit.decision,
// ratelimit.remaining...); a batch's records its size and how many items
// were allowed and denied; an error reply sets ratelimit.error.code and
// the span's error status. The raw key is recorded only with
// tracing.WithKeys among opts.
//
// With a nil or no-op provider (the default) tracing is off and no span is
// created at all: see tracing.New.
func WithTracerProvider(tp trace.TracerProvider, opts ...tracing.Option) Option {
	return func(n *Node) { n.tr = tracing.New(tp, opts...) }
}
