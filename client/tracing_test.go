package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/protocol"
	"github.com/fluxlimiter/flux/tracing"
)

// fakeNode is a bare NATS server with a responder on the flux subjects
// that records the headers of each request and answers fixed replies: a
// decision (a 404 for the limiter "nope"), three results, no limiters.
func fakeNode(t *testing.T) (*nats.Conn, func() []nats.Header) {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	var seen []nats.Header
	decision := `{"allowed":true,"limit":21,"remaining":20,"retry_after_ns":0,"reset_after_ns":10000000,"delay_ns":0}`
	_, err = nc.Subscribe("flux.v1.>", func(m *nats.Msg) {
		mu.Lock()
		seen = append(seen, m.Header)
		mu.Unlock()
		switch {
		case strings.Contains(string(m.Data), `"nope"`) && m.Subject == protocol.SubjectCheck:
			reply := nats.NewMsg(m.Reply)
			reply.Header.Set(micro.ErrorCodeHeader, "404")
			reply.Header.Set(micro.ErrorHeader, `unknown limiter "nope"`)
			reply.Data = []byte(`{"error":{"code":404,"reason":"unknown_limiter","description":"unknown limiter \"nope\""}}`)
			_ = m.RespondMsg(reply)
		case m.Subject == protocol.SubjectLimiters:
			_ = m.Respond([]byte(`{"limiters":[]}`))
		case m.Subject == protocol.SubjectCheckBatch:
			denied := strings.Replace(decision, `"allowed":true`, `"allowed":false`, 1)
			_ = m.Respond([]byte(fmt.Sprintf(`{"results":[%s,%s,%s]}`, decision, decision, denied)))
		default:
			_ = m.Respond([]byte(decision))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return nc, func() []nats.Header {
		mu.Lock()
		defer mu.Unlock()
		out := seen
		seen = nil
		return out
	}
}

func attrsOf(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// Without a TracerProvider the client sends no headers at all; with one it
// starts a client span per request and sends its context as traceparent.
func TestTracing(t *testing.T) {
	nc, seen := fakeNode(t)

	plain := client.New(nc)
	if _, err := plain.Check(t.Context(), "api", "alice", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.CheckBatch(t.Context(), []client.Request{{Limiter: "api", Key: "a"}, {Limiter: "api", Key: "b"}, {Limiter: "api", Key: "c"}}); err != nil {
		t.Fatal(err)
	}
	for i, h := range seen() {
		if len(h) != 0 {
			t.Fatalf("untraced request %d carried headers %v", i, h)
		}
	}

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	c := client.New(nc, client.WithTracerProvider(tp))
	if _, err := c.Check(t.Context(), "api", "alice", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check(t.Context(), "nope", "alice", 1); !errors.Is(err, client.ErrUnknownLimiter) {
		t.Fatalf("nope: %v", err)
	}
	if _, err := c.CheckBatch(t.Context(), []client.Request{{Limiter: "api", Key: "a"}, {Limiter: "api", Key: "b"}, {Limiter: "api", Key: "c"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Limiters(t.Context()); err != nil {
		t.Fatal(err)
	}
	spans, hs := rec.Ended(), seen()
	if len(spans) != 4 || len(hs) != 4 {
		t.Fatalf("%d spans, %d requests; want 4 and 4", len(spans), len(hs))
	}
	for i, s := range spans {
		want := fmt.Sprintf("00-%s-%s-01", s.SpanContext().TraceID(), s.SpanContext().SpanID())
		if got := hs[i].Get("traceparent"); got != want || s.SpanKind() != trace.SpanKindClient {
			t.Fatalf("request %d: traceparent %q, kind %v; want %q from its client span", i, got, s.SpanKind(), want)
		}
	}
	a := attrsOf(spans[0])
	if spans[0].Name() != protocol.SubjectCheck || a[tracing.AttrLimiter].AsString() != "api" || a[tracing.AttrDecision].AsString() != "allowed" ||
		a[tracing.AttrRemaining].AsInt64() != 20 || spans[0].Status().Code == codes.Error {
		t.Fatalf("check span %s: %v %v", spans[0].Name(), a, spans[0].Status())
	}
	if _, ok := a[tracing.AttrKey]; ok {
		t.Fatalf("key recorded without WithKeys: %v", a)
	}
	if a := attrsOf(spans[1]); spans[1].Status().Code != codes.Error || a[tracing.AttrErrorCode].AsString() != "404" {
		t.Fatalf("error span: %v %v", spans[1].Status(), a)
	}
	if a := attrsOf(spans[2]); spans[2].Name() != protocol.SubjectCheckBatch || a[tracing.AttrBatchSize].AsInt64() != 3 ||
		a[tracing.AttrAllowed].AsInt64() != 2 || a[tracing.AttrDenied].AsInt64() != 1 || a[tracing.AttrLimiter].AsString() != "api" {
		t.Fatalf("batch span %s: %v", spans[2].Name(), a)
	}
	if spans[3].Name() != protocol.SubjectLimiters || spans[3].Status().Code == codes.Error {
		t.Fatalf("limiters span %s: %v", spans[3].Name(), spans[3].Status())
	}

	keyed := client.New(nc, client.WithTracerProvider(tp, tracing.WithKeys()))
	if _, err := keyed.Check(t.Context(), "api", "alice", 1); err != nil {
		t.Fatal(err)
	}
	if a := attrsOf(rec.Ended()[4]); a[tracing.AttrKey].AsString() != "alice" {
		t.Fatalf("with WithKeys: %v", a)
	}
}
