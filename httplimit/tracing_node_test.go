package httplimit_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/httplimit"
	"github.com/fluxlimiter/flux/node"
	"github.com/fluxlimiter/flux/node/nodetest"
	"github.com/fluxlimiter/flux/protocol"
	"github.com/fluxlimiter/flux/tracing"
)

// One HTTP request checked through a flux-node is one trace of three spans:
// the middleware's server span, the client's span under it, and the node's
// server span under that, carried over NATS in the message headers. Each
// records the limiter, the decision and the remaining count; none records
// the key, which nobody opted in to.
func TestTraceThroughFluxNode(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	n := nodetest.Start(t, nodetest.Config(t, map[string]node.LimiterConfig{"api": {Rate: 1, Burst: 1}}), node.WithTracerProvider(tp))
	nc := nodetest.Connect(t, n)
	c := client.New(nc, client.WithTracerProvider(tp))
	infos, err := c.Limiters(t.Context())
	if err != nil || len(infos) != 1 {
		t.Fatalf("limiters: %v, %v", infos, err)
	}
	lim, err := infos[0].FluxLimit()
	if err != nil {
		t.Fatal(err)
	}
	var h served
	srv := serve(t, httplimit.Middleware(nil, httplimit.WithTracer(tracing.New(tp)),
		httplimit.WithChecker(httplimit.Remote(c, "api", lim)))(&h))

	rec.Reset() // forget the Limiters call
	if r := do(t, srv, "GET", "/", nil); r.status != 200 {
		t.Fatalf("request: %d %s", r.status, r.body)
	}
	var spans []sdktrace.ReadOnlySpan
	deadline := time.Now().Add(5 * time.Second)
	for len(spans) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // the node ends its span just after replying
		spans = rec.Ended()
	}
	if len(spans) != 3 {
		t.Fatalf("%d spans ended, want 3", len(spans))
	}
	byKind := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		switch {
		case s.SpanKind() == trace.SpanKindClient:
			byKind["client"] = s
		case s.Name() == protocol.SubjectCheck:
			byKind["node"] = s
		default:
			byKind["http"] = s
		}
	}
	hs, cs, ns := byKind["http"], byKind["client"], byKind["node"]
	if hs == nil || cs == nil || ns == nil {
		t.Fatalf("spans %v, want an HTTP, a client and a node span", spans)
	}
	if hs.SpanKind() != trace.SpanKindServer || hs.Parent().IsValid() {
		t.Fatalf("HTTP span: kind %v, parent %v; want a root server span", hs.SpanKind(), hs.Parent())
	}
	tid := hs.SpanContext().TraceID()
	if cs.SpanContext().TraceID() != tid || ns.SpanContext().TraceID() != tid {
		t.Fatal("the three spans are not in one trace")
	}
	if cs.Parent().SpanID() != hs.SpanContext().SpanID() || cs.Parent().IsRemote() {
		t.Fatalf("client span's parent %v, want the HTTP span %v", cs.Parent(), hs.SpanContext())
	}
	if ns.Parent().SpanID() != cs.SpanContext().SpanID() || !ns.Parent().IsRemote() || ns.SpanKind() != trace.SpanKindServer {
		t.Fatalf("node span's parent %v (kind %v), want the client span %v, remote", ns.Parent(), ns.SpanKind(), cs.SpanContext())
	}
	for name, want := range map[string]struct {
		s       sdktrace.ReadOnlySpan
		limiter string
	}{"http": {hs, "default"}, "client": {cs, "api"}, "node": {ns, "api"}} {
		a := map[attribute.Key]attribute.Value{}
		for _, kv := range want.s.Attributes() {
			a[kv.Key] = kv.Value
		}
		if a[tracing.AttrLimiter].AsString() != want.limiter || a[tracing.AttrDecision].AsString() != "allowed" || a[tracing.AttrRemaining].AsInt64() != 1 {
			t.Errorf("%s span attributes %v, want limiter %q, decision allowed, remaining 1", name, a, want.limiter)
		}
		if _, ok := a[tracing.AttrKey]; ok {
			t.Errorf("%s span records the key without opt-in: %v", name, a)
		}
	}
}
