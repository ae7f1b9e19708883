package tracing_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/tracing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func recorder(t *testing.T, sampler sdktrace.Sampler) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sampler))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, rec
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// deprecatedNoop returns the deprecated no-op provider, which must count
// as off too.
func deprecatedNoop() trace.TracerProvider {
	//lint:ignore SA1019 testing that the deprecated no-op provider is detected
	return trace.NewNoopTracerProvider()
}

func TestOffWhenNoProvider(t *testing.T) {
	for name, tp := range map[string]trace.TracerProvider{
		"nil":              nil,
		"noop":             noop.NewTracerProvider(),
		"noop pointer":     new(noop.TracerProvider),
		"global default":   otel.GetTracerProvider(),
		"trace.NewNoop...": deprecatedNoop(),
	} {
		if tr := tracing.New(tp); tr != nil {
			t.Errorf("%s: tracing on", name)
		}
	}
	tp, _ := recorder(t, sdktrace.AlwaysSample())
	if tracing.New(tp) == nil {
		t.Fatal("SDK provider: tracing off")
	}
}

// With tracing off nothing is started and nothing is allocated.
func TestOffCostsNothing(t *testing.T) {
	var tr *tracing.Tracer
	ctx := context.Background()
	msg := nats.NewMsg("flux.v1.check")
	h := nats.Header{}
	errX := errors.New("x")
	allocs := testing.AllocsPerRun(100, func() {
		c, sp := tr.StartServer(ctx, "flux.v1.check", h)
		sp.Check("api", "alice", 1)
		sp.Result(flux.Decision{Allowed: true}, nil)
		sp.Error(errX)
		sp.End()
		c, sp = tr.StartClient(c, "flux.v1.check", msg.Header)
		sp.End()
		_ = c
	})
	if allocs != 0 {
		t.Fatalf("%v allocations with tracing off", allocs)
	}
	if len(msg.Header) != 0 {
		t.Fatalf("headers injected with tracing off: %v", msg.Header)
	}
	if h := tr.CheckHooks("api"); h.AfterCheck != nil || h.OnError != nil {
		t.Fatal("hooks with tracing off")
	}
}

func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		s.Shutdown()
		s.WaitForShutdown()
	})
	return nc
}

type checkReq struct {
	Limiter string `json:"limiter"`
	Key     string `json:"key"`
	Cost    int    `json:"cost"`
}

// A client span's context crosses NATS in the message headers and becomes
// the parent of the node's server span; each boundary has exactly one span
// with the domain attributes, and the key only when opted in.
func TestParentCarriedOverNATS(t *testing.T) {
	for _, withKeys := range []bool{false, true} {
		t.Run(map[bool]string{false: "no keys", true: "keys"}[withKeys], func(t *testing.T) {
			nc := startNATS(t)
			serverTP, serverRec := recorder(t, sdktrace.ParentBased(sdktrace.AlwaysSample()))
			clientTP, clientRec := recorder(t, sdktrace.AlwaysSample())
			var opts []tracing.Option
			if withKeys {
				opts = append(opts, tracing.WithKeys())
			}
			srvTr := tracing.New(serverTP, opts...)
			cliTr := tracing.New(clientTP, opts...)

			lim, err := flux.New(flux.Limit{Rate: 1, Burst: 1}, flux.WithClock(clock.NewManual(time.Unix(0, 0))))
			if err != nil {
				t.Fatal(err)
			}
			defer lim.Close()

			svc, err := micro.AddService(nc, micro.Config{Name: "fluxtest", Version: "0.0.1"})
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Stop()
			err = svc.AddGroup("flux.v1").AddEndpoint("check", micro.HandlerFunc(func(req micro.Request) {
				ctx, sp := srvTr.StartServer(context.Background(), "flux.v1.check", req.Headers())
				defer sp.End()
				var cr checkReq
				if err := json.Unmarshal(req.Data(), &cr); err != nil {
					sp.ErrorCode("400", "malformed")
					_ = req.Error("400", "malformed", nil)
					return
				}
				sp.Check(cr.Limiter, cr.Key, cr.Cost)
				d, err := lim.CheckN(ctx, cr.Key, cr.Cost)
				sp.Result(d, err)
				_ = req.RespondJSON(d)
			}))
			if err != nil {
				t.Fatal(err)
			}

			call := func(body string) {
				msg := nats.NewMsg("flux.v1.check")
				msg.Data = []byte(body)
				ctx, sp := cliTr.StartClient(t.Context(), "flux.v1.check", msg.Header)
				resp, err := nc.RequestMsgWithContext(ctx, msg)
				if err != nil {
					t.Fatal(err)
				}
				var d flux.Decision
				_ = json.Unmarshal(resp.Data, &d)
				sp.Check("api", "alice", 1)
				sp.Result(d, nil)
				sp.End()
			}
			call(`{"limiter":"api","key":"alice","cost":1}`)
			call(`{"limiter":"api","key":"alice","cost":1}`)
			call(`{"limiter":"api","key":"alice","cost":1}`) // denied
			call(`not json`)

			// The handler ends its span after responding: wait for it.
			ss := serverRec.Ended()
			for deadline := time.Now().Add(5 * time.Second); len(ss) < 4 && time.Now().Before(deadline); ss = serverRec.Ended() {
				time.Sleep(time.Millisecond)
			}
			cs := clientRec.Ended()
			if len(cs) != 4 || len(ss) != 4 {
				t.Fatalf("%d client spans, %d server spans; want 4 and 4", len(cs), len(ss))
			}
			for i := range 4 {
				c, s := cs[i], ss[i]
				if c.SpanKind() != trace.SpanKindClient || s.SpanKind() != trace.SpanKindServer {
					t.Fatalf("kinds %v %v", c.SpanKind(), s.SpanKind())
				}
				if !s.Parent().IsRemote() || s.Parent().SpanID() != c.SpanContext().SpanID() ||
					s.SpanContext().TraceID() != c.SpanContext().TraceID() {
					t.Fatalf("call %d: server parent %v, client %v", i, s.Parent(), c.SpanContext())
				}
				if s.InstrumentationScope().Name != tracing.ScopeName {
					t.Fatalf("scope %q", s.InstrumentationScope().Name)
				}
			}
			for i, want := range []string{"allowed", "allowed", "denied"} {
				a := attrs(ss[i])
				if a[tracing.AttrLimiter].AsString() != "api" || a[tracing.AttrDecision].AsString() != want ||
					a[tracing.AttrRemaining].AsInt64() != []int64{1, 0, 0}[i] || a[tracing.AttrLimit].AsInt64() != 2 {
					t.Fatalf("server span %d attributes: %v", i, a)
				}
				if _, ok := a[tracing.AttrKey]; ok != withKeys {
					t.Fatalf("server span %d: key present=%v, want %v", i, ok, withKeys)
				}
				if withKeys && a[tracing.AttrKey].AsString() != "alice" {
					t.Fatalf("key = %v", a[tracing.AttrKey])
				}
				if ss[i].Status().Code == codes.Error {
					t.Fatalf("a decision (even a denial) marked as error: %v", ss[i].Status())
				}
			}
			if a := attrs(ss[2]); a[tracing.AttrRetryAfter].AsFloat64() != 1 || a[tracing.AttrRemaining].AsInt64() != 0 {
				t.Fatalf("denial attributes: %v", a)
			}
			if st := ss[3].Status(); st.Code != codes.Error || attrs(ss[3])[tracing.AttrErrorCode].AsString() != "400" {
				t.Fatalf("error reply span: %v %v", st, attrs(ss[3]))
			}
		})
	}
}

// StartClient injects into the message's headers; a server whose sampler
// follows the parent records nothing for an unsampled client.
func TestStartClientInjectsAndSamplingFollowsParent(t *testing.T) {
	serverTP, serverRec := recorder(t, sdktrace.ParentBased(sdktrace.AlwaysSample()))
	clientTP, clientRec := recorder(t, sdktrace.NeverSample())
	srv, cli := tracing.New(serverTP), tracing.New(clientTP)

	msg := nats.NewMsg("flux.v1.check")
	_, sp := cli.StartClient(context.Background(), "flux.v1.check", msg.Header)
	sp.End()
	if msg.Header.Get("traceparent") == "" {
		t.Fatalf("no traceparent injected: %v", msg.Header)
	}
	_, ssp := srv.StartServer(context.Background(), "flux.v1.check", msg.Header)
	if ssp.Recording() {
		t.Fatal("server span recorded under an unsampled parent")
	}
	ssp.End()
	if len(clientRec.Ended())+len(serverRec.Ended()) != 0 {
		t.Fatal("spans recorded")
	}
}

func TestHeaderCarrierIgnoresCase(t *testing.T) {
	h := tracing.HeaderCarrier{"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	if h.Get("traceparent") == "" {
		t.Fatal("case-insensitive Get failed")
	}
	h.Set("tracestate", "a=b")
	if h.Get("tracestate") != "a=b" || len(h.Keys()) != 2 {
		t.Fatalf("%v", h)
	}
	tp, rec := recorder(t, sdktrace.AlwaysSample())
	ctx, sp := tracing.New(tp).StartServer(context.Background(), "x", h)
	sp.End()
	if got := trace.SpanContextFromContext(ctx).TraceID().String(); got != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("trace id %s", got)
	}
	if len(rec.Ended()) != 1 {
		t.Fatal("no span")
	}
}

// CheckHooks (and the deprecated CheckMiddleware) add a child span only
// inside a recording trace.
func TestCheckHooks(t *testing.T) {
	t.Run("hooks", func(t *testing.T) {
		testCheckSpans(t, func(tr *tracing.Tracer) flux.Option { return flux.WithHooks(tr.CheckHooks("api")) })
	})
	t.Run("middleware", func(t *testing.T) {
		//lint:ignore SA1019 the deprecated middleware must keep working
		testCheckSpans(t, func(tr *tracing.Tracer) flux.Option { return flux.WithMiddleware(tr.CheckMiddleware("api")) })
	})
}

func testCheckSpans(t *testing.T, opt func(*tracing.Tracer) flux.Option) {
	tp, rec := recorder(t, sdktrace.ParentBased(sdktrace.NeverSample()))
	tr := tracing.New(tp)
	l, err := flux.New(flux.Limit{Rate: 1}, flux.WithClock(clock.NewManual(time.Unix(0, 0))), opt(tr))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	// No span in the context, and an unsampled one: no span.
	if _, err := l.Check(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	ctx, root := tp.Tracer("test").Start(context.Background(), "root")
	if _, err := l.Check(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	root.End()
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans outside a sampled trace", n)
	}

	// A sampled parent: one child span with the decision.
	tp2, rec2 := recorder(t, sdktrace.AlwaysSample())
	ctx, root = tp2.Tracer("test").Start(context.Background(), "root")
	if _, err := l.Check(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	root.End()
	// The child comes from tr's provider, whose parent-based sampler
	// follows the sampled parent from tp2; the root is tp2's.
	if n := len(rec2.Ended()); n != 1 {
		t.Fatalf("%d root spans", n)
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d check spans", len(spans))
	}
	child := spans[0]
	if child.Name() != "ratelimit.check" || child.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Fatalf("child %q parent %v", child.Name(), child.Parent())
	}
	if a := attrs(child); a[tracing.AttrDecision].AsString() != "denied" || a[tracing.AttrLimiter].AsString() != "api" {
		t.Fatalf("attributes %v", a)
	}
	if _, ok := attrs(child)[tracing.AttrKey]; ok {
		t.Fatal("key recorded without WithKeys")
	}
}
