package node

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/fluxlimiter/flux/tracing"
)

// startTracedNode starts a node whose spans go to the returned recorder.
func startTracedNode(t *testing.T, opts ...tracing.Option) (*Node, *tracetest.SpanRecorder, *tracing.Tracer) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	n, err := New(testConfig(t), nil, WithTracerProvider(tp, opts...))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		n.Shutdown(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	return n, rec, tracing.New(tp)
}

// tracedRequest sends body to subject under a client span of tr and
// returns the client span's context.
func tracedRequest(t *testing.T, nc *nats.Conn, tr *tracing.Tracer, subject, body string) trace.SpanContext {
	t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = []byte(body)
	ctx, sp := tr.StartClient(t.Context(), subject, msg.Header)
	defer sp.End()
	if _, err := nc.RequestMsgWithContext(ctx, msg); err != nil {
		t.Fatal(err)
	}
	return sp.Span().SpanContext()
}

// serverSpan waits for the node's span whose parent is parent (the node
// ends its span just after replying).
func serverSpan(t *testing.T, rec *tracetest.SpanRecorder, parent trace.SpanContext) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	waitFor(t, "the node's span", 5*time.Second, func() bool {
		for _, s := range rec.Ended() {
			if s.Parent().SpanID() == parent.SpanID() && s.SpanKind() == trace.SpanKindServer {
				found = s
				return true
			}
		}
		return false
	})
	if !found.Parent().IsRemote() || found.SpanContext().TraceID() != parent.TraceID() {
		t.Fatalf("node span %s: parent %v, want remote parent %v in the same trace", found.Name(), found.Parent(), parent)
	}
	return found
}

func spanAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// Every check and check_batch request gets a server span, a child of the
// span whose context the sender put in its headers.
func TestTracingServerSpans(t *testing.T) {
	n, rec, tr := startTracedNode(t)
	nc := connect(t, n)

	parent := tracedRequest(t, nc, tr, SubjectCheck, `{"limiter":"api","key":"alice","cost":2}`)
	s := serverSpan(t, rec, parent)
	a := spanAttrs(s)
	if s.Name() != SubjectCheck || a[tracing.AttrLimiter].AsString() != "api" || a[tracing.AttrDecision].AsString() != "allowed" ||
		a[tracing.AttrRemaining].AsInt64() != 19 || a[tracing.AttrCost].AsInt64() != 2 || a[tracing.AttrLimit].AsInt64() != 21 {
		t.Fatalf("check span %s: %v", s.Name(), a)
	}
	if _, ok := a[tracing.AttrKey]; ok || s.Status().Code == codes.Error {
		t.Fatalf("check span has a key (not opted in) or an error: %v %v", a, s.Status())
	}

	parent = tracedRequest(t, nc, tr, SubjectCheck, `{"limiter":"nope","key":"alice"}`)
	s = serverSpan(t, rec, parent)
	if a := spanAttrs(s); s.Status().Code != codes.Error || a[tracing.AttrErrorCode].AsString() != "404" {
		t.Fatalf("unknown limiter span: %v %v", s.Status(), a)
	}
	parent = tracedRequest(t, nc, tr, SubjectCheck, `{"limiter":"slow","key":"bob","cost":5}`)
	s = serverSpan(t, rec, parent)
	if a := spanAttrs(s); a[tracing.AttrErrorCode].AsString() != "400" || a[tracing.AttrLimiter].AsString() != "slow" {
		t.Fatalf("cost above capacity span: %v %v", s.Status(), a)
	}

	parent = tracedRequest(t, nc, tr, SubjectCheckBatch,
		`{"requests":[{"limiter":"slow","key":"b"},{"limiter":"slow","key":"b"},{"limiter":"nope","key":"b"}]}`)
	s = serverSpan(t, rec, parent)
	a = spanAttrs(s)
	if s.Name() != SubjectCheckBatch || a[tracing.AttrBatchSize].AsInt64() != 3 ||
		a[tracing.AttrAllowed].AsInt64() != 1 || a[tracing.AttrDenied].AsInt64() != 1 || s.Status().Code == codes.Error {
		t.Fatalf("batch span %s: %v %v", s.Name(), a, s.Status())
	}
	parent = tracedRequest(t, nc, tr, SubjectCheckBatch, `{"requests":[{"limiter":"slow","key":"c"}]}`)
	if a := spanAttrs(serverSpan(t, rec, parent)); a[tracing.AttrLimiter].AsString() != "slow" {
		t.Fatalf("one-limiter batch span: %v", a)
	}
	parent = tracedRequest(t, nc, tr, SubjectCheckBatch, `not json`)
	if s := serverSpan(t, rec, parent); spanAttrs(s)[tracing.AttrErrorCode].AsString() != "400" {
		t.Fatalf("malformed batch span: %v", spanAttrs(s))
	}
}

// The raw key is recorded only when the node opts in.
func TestTracingKeysOptIn(t *testing.T) {
	n, rec, tr := startTracedNode(t, tracing.WithKeys())
	parent := tracedRequest(t, connect(t, n), tr, SubjectCheck, `{"limiter":"api","key":"alice"}`)
	if a := spanAttrs(serverSpan(t, rec, parent)); a[tracing.AttrKey].AsString() != "alice" {
		t.Fatalf("with WithKeys: %v", a)
	}
}

// Tracing is off unless a real provider is given: no Tracer, so the
// handlers start no span.
func TestTracingOff(t *testing.T) {
	for name, opts := range map[string][]Option{
		"none": nil,
		"nil":  {WithTracerProvider(nil)},
		"noop": {WithTracerProvider(noop.NewTracerProvider())},
	} {
		n, err := New(testConfig(t), nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if n.tr != nil {
			t.Errorf("%s: tracing on", name)
		}
		w, pub := pipelineOf(n, kindCheck)
		msgs := []*nats.Msg{msg(kindCheck, []byte(`{"limiter":"api","key":"alice"}`))}
		w.serve(msgs) // the key is stored: later checks do not allocate for it
		if allocs := testing.AllocsPerRun(100, func() { w.serve(msgs); pub.n = 0 }); allocs != 0 {
			t.Errorf("%s: a check allocates %v times with tracing off", name, allocs)
		}
		n.Shutdown(context.Background())
	}
}
