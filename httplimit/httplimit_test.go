package httplimit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/failure"
	"github.com/fluxlimiter/flux/httplimit"
	"github.com/fluxlimiter/flux/internal/fluxtest"
	"github.com/fluxlimiter/flux/tracing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// keyLog records the keys a limiter checks, through its hooks.
type keyLog struct {
	mu   sync.Mutex
	keys []string
}

func (k *keyLog) hooks() flux.Hooks {
	return flux.Hooks{BeforeCheck: func(_ context.Context, key string, cost int) {
		k.mu.Lock()
		k.keys = append(k.keys, key+"/"+strconv.Itoa(cost))
		k.mu.Unlock()
	}}
}

func (k *keyLog) take() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	ks := k.keys
	k.keys = nil
	return ks
}

// newLimiter is a two-shard limiter on a manual clock, closed with the
// test.
func newLimiter(t *testing.T, lim flux.Limit, opts ...flux.Option) (*flux.Limiter, *clock.Manual) {
	t.Helper()
	return fluxtest.New(t, lim, append([]flux.Option{flux.WithShards(2)}, opts...)...)
}

// served counts the requests that reached the handler.
type served struct {
	mu sync.Mutex
	n  int
}

func (s *served) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (s *served) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

type resp struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, srv *httptest.Server, method, path string, header map[string]string) resp {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	r, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, string(b)}
}

// sfItem is one member of a structured-field List (RFC 9651) whose bare
// item is a String and whose parameters are Integers.
type sfItem struct {
	name   string
	params map[string]int64
	order  []string
}

// parseSFList parses a List of String items with Integer parameters,
// strictly: anything else in the field is an error.
func parseSFList(field string) ([]sfItem, error) {
	var items []sfItem
	s := field
	for {
		s = strings.TrimLeft(s, " ")
		if len(s) == 0 || s[0] != '"' {
			return nil, fmt.Errorf("item does not start with a String: %q", s)
		}
		var name strings.Builder
		i := 1
		for ; ; i++ {
			if i >= len(s) {
				return nil, errors.New("unterminated String")
			}
			c := s[i]
			if c == '\\' {
				i++
				if i >= len(s) || (s[i] != '"' && s[i] != '\\') {
					return nil, errors.New("bad escape")
				}
				name.WriteByte(s[i])
				continue
			}
			if c == '"' {
				break
			}
			if c < 0x20 || c > 0x7e {
				return nil, fmt.Errorf("bad byte %#x in String", c)
			}
			name.WriteByte(c)
		}
		s = s[i+1:]
		it := sfItem{name: name.String(), params: map[string]int64{}}
		for len(s) > 0 && s[0] == ';' {
			s = strings.TrimLeft(s[1:], " ")
			j := 0
			for j < len(s) && (s[j] >= 'a' && s[j] <= 'z' || s[j] >= '0' && s[j] <= '9' || s[j] == '_' || s[j] == '-' || s[j] == '.' || s[j] == '*') {
				j++
			}
			if j == 0 || s[0] < 'a' || s[0] > 'z' {
				return nil, fmt.Errorf("bad parameter key in %q", s)
			}
			key := s[:j]
			s = s[j:]
			if len(s) == 0 || s[0] != '=' {
				return nil, fmt.Errorf("parameter %s without an Integer value", key)
			}
			s = s[1:]
			k := 0
			for k < len(s) && s[k] >= '0' && s[k] <= '9' {
				k++
			}
			if k == 0 || k > 15 {
				return nil, fmt.Errorf("parameter %s: not an Integer", key)
			}
			v, _ := strconv.ParseInt(s[:k], 10, 64)
			if _, dup := it.params[key]; dup {
				return nil, fmt.Errorf("duplicate parameter %s", key)
			}
			it.params[key] = v
			it.order = append(it.order, key)
			s = s[k:]
		}
		items = append(items, it)
		s = strings.TrimLeft(s, " ")
		if len(s) == 0 {
			return items, nil
		}
		if s[0] != ',' {
			return nil, fmt.Errorf("junk after item: %q", s)
		}
		s = s[1:]
	}
}

func oneItem(t *testing.T, h http.Header, field string) sfItem {
	t.Helper()
	vs := h.Values(field)
	if len(vs) != 1 {
		t.Fatalf("%s: %d field lines %q", field, len(vs), vs)
	}
	items, err := parseSFList(vs[0])
	if err != nil {
		t.Fatalf("%s: %q: %v", field, vs[0], err)
	}
	if len(items) != 1 {
		t.Fatalf("%s: %d items", field, len(items))
	}
	return items[0]
}

func wantItem(t *testing.T, h http.Header, field, name string, params ...any) {
	t.Helper()
	it := oneItem(t, h, field)
	if it.name != name {
		t.Fatalf("%s: name %q, want %q", field, it.name, name)
	}
	var keys []string
	for i := 0; i < len(params); i += 2 {
		k, v := params[i].(string), int64(params[i+1].(int))
		keys = append(keys, k)
		if got, ok := it.params[k]; !ok || got != v {
			t.Fatalf("%s: %s=%d (present %v), want %d; field %q", field, k, got, ok, v, h.Get(field))
		}
	}
	if !slices.Equal(it.order, keys) {
		t.Fatalf("%s: parameters %v, want %v", field, it.order, keys)
	}
}

func TestHeadersAndDenial(t *testing.T) {
	l, clk := newLimiter(t, flux.Limit{Rate: 2, Burst: 4}) // capacity 5, 500ms each: 2.5s from empty
	var h served
	srv := serve(t, httplimit.Middleware(l)(&h))

	for i := range 5 {
		r := do(t, srv, "GET", "/", nil)
		if r.status != 200 || r.body != "ok" {
			t.Fatalf("request %d: %d %q", i, r.status, r.body)
		}
		wantItem(t, r.header, "RateLimit-Policy", "default", "q", 5, "w", 3)
		// After i+1 requests the key is back at full capacity in (i+1)*500ms.
		wantItem(t, r.header, "RateLimit", "default", "r", 4-i, "t", (i+2)/2)
		if r.header.Get("Retry-After") != "" || r.header.Get("X-RateLimit-Limit") != "" {
			t.Fatalf("request %d: unexpected fields %v", i, r.header)
		}
	}
	clk.Advance(100 * time.Millisecond)
	r := do(t, srv, "GET", "/", nil)
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("6th: %d", r.status)
	}
	if h.count() != 5 {
		t.Fatalf("handler ran %d times, want 5", h.count())
	}
	if got := r.header.Get("Retry-After"); got != "1" { // 400ms rounded up
		t.Fatalf("Retry-After %q", got)
	}
	wantItem(t, r.header, "RateLimit-Policy", "default", "q", 5, "w", 3)
	wantItem(t, r.header, "RateLimit", "default", "r", 0, "t", 3) // 2.4s rounded up
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal([]byte(r.body), &p); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	if p.Status != 429 || p.Title != "Too Many Requests" || p.Type != "about:blank" || !strings.Contains(p.Detail, "1 second") {
		t.Fatalf("problem %+v", p)
	}

	// A long wait: Retry-After is whole seconds, rounded up.
	l2, _ := newLimiter(t, flux.Limit{Rate: 0.4}) // one per 2.5s
	srv2 := serve(t, httplimit.Middleware(l2, httplimit.WithName(`api "v1"`), httplimit.WithLegacyHeaders())(&h))
	r = do(t, srv2, "GET", "/", nil)
	wantItem(t, r.header, "RateLimit-Policy", `api "v1"`, "q", 1, "w", 3)
	if r.header.Get("X-RateLimit-Limit") != "1" || r.header.Get("X-RateLimit-Remaining") != "0" || r.header.Get("X-RateLimit-Reset") != "3" {
		t.Fatalf("legacy fields: %v", r.header)
	}
	r = do(t, srv2, "GET", "/", nil)
	if r.status != 429 || r.header.Get("Retry-After") != "3" {
		t.Fatalf("denial: %d %q", r.status, r.header.Get("Retry-After"))
	}
}

// The policy's w for every algorithm: refill time for the rate
// algorithms, the window for the window algorithms.
func TestPolicyPerAlgorithm(t *testing.T) {
	for _, c := range []struct {
		lim  flux.Limit
		q, w int // w 0: omitted
	}{
		{flux.Limit{Rate: 10, Burst: 5}, 6, 1},
		{flux.Limit{Algorithm: flux.TokenBucket, Rate: 0.5, Burst: 2}, 3, 6},
		{flux.Limit{Algorithm: flux.LeakyBucket, Rate: 4, Burst: 9}, 10, 3},
		{flux.Limit{Algorithm: flux.FixedWindow, Requests: 100, Window: time.Minute}, 100, 60},
		{flux.Limit{Algorithm: flux.SlidingWindow, Requests: 5, Window: 1500 * time.Millisecond}, 5, 2},
		{flux.Limit{Algorithm: flux.SlidingWindowLog, Requests: 3, Window: time.Hour}, 3, 3600},
		{flux.Limit{Algorithm: flux.FixedWindow, Requests: 1000, Calendar: flux.CalendarDay}, 1000, 86400},
		{flux.Limit{Algorithm: flux.FixedWindow, Requests: 1000, Calendar: flux.CalendarMonth}, 1000, 0},
	} {
		l, _ := newLimiter(t, c.lim)
		var h served
		r := do(t, serve(t, httplimit.Middleware(l)(&h)), "GET", "/", nil)
		if r.status != 200 {
			t.Fatalf("%+v: %d", c.lim, r.status)
		}
		if c.w == 0 {
			wantItem(t, r.header, "RateLimit-Policy", "default", "q", c.q)
		} else {
			wantItem(t, r.header, "RateLimit-Policy", "default", "q", c.q, "w", c.w)
		}
	}
}

func TestTrustedProxies(t *testing.T) {
	var keys keyLog
	l, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 100}, flux.WithHooks(keys.hooks()))
	var h served
	plain := serve(t, httplimit.Middleware(l)(&h))
	proxied := serve(t, httplimit.Middleware(l,
		httplimit.WithTrustedProxies(netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")))(&h))
	xff := func(v string) map[string]string { return map[string]string{"X-Forwarded-For": v} }

	// An untrusted peer's X-Forwarded-For is ignored.
	do(t, plain, "GET", "/", xff("203.0.113.9"))
	do(t, plain, "GET", "/", nil)
	if got := keys.take(); !slices.Equal(got, []string{"127.0.0.1/1", "127.0.0.1/1"}) {
		t.Fatalf("untrusted: %q", got)
	}

	for _, c := range []struct{ xff, want string }{
		{"203.0.113.9", "203.0.113.9"},
		{"6.6.6.6, 203.0.113.9", "203.0.113.9"},  // a spoofed left part is skipped
		{"203.0.113.9, 10.1.2.3", "203.0.113.9"}, // through two trusted proxies
		{"10.9.9.9, 10.1.2.3", "10.9.9.9"},       // everyone trusted: the leftmost
		{"garbage, 10.1.2.3", "10.1.2.3"},        // unparsable: the last good hop
		{"[2001:db8::1]:443", "2001:db8::/64"},   // IPv6 with port, keyed by /64
		{"2001:db8::2", "2001:db8::/64"},         // same /64, same key
		{"::ffff:198.51.100.7", "198.51.100.7"},  // IPv4-mapped
		{"198.51.100.7:5555", "198.51.100.7"},    // with a port
		{"", "127.0.0.1"},                        // no header: the proxy itself
	} {
		do(t, proxied, "GET", "/", xff(c.xff))
		if got := keys.take(); !slices.Equal(got, []string{c.want + "/1"}) {
			t.Errorf("X-Forwarded-For %q: key %q, want %q", c.xff, got, c.want)
		}
	}

	// Several header lines form one list.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", proxied.URL, nil)
	req.Header.Add("X-Forwarded-For", "6.6.6.6")
	req.Header.Add("X-Forwarded-For", "203.0.113.10, 10.0.0.1")
	r, err := proxied.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if got := keys.take(); !slices.Equal(got, []string{"203.0.113.10/1"}) {
		t.Fatalf("two lines: %q", got)
	}

	// WithIPv6Prefix(128) keys each address apart.
	six := serve(t, httplimit.Middleware(l, httplimit.WithIPv6Prefix(128),
		httplimit.WithTrustedProxies(netip.MustParsePrefix("127.0.0.1/32")))(&h))
	do(t, six, "GET", "/", xff("2001:db8::1"))
	if got := keys.take(); !slices.Equal(got, []string{"2001:db8::1/1"}) {
		t.Fatalf("/128: %q", got)
	}
}

func TestKeyCostExcludeSkip(t *testing.T) {
	var keys keyLog
	l, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 9}, flux.WithHooks(keys.hooks()))
	var h served
	mw := httplimit.Middleware(l,
		httplimit.WithKeyFunc(func(r *http.Request) (string, error) {
			switch k := r.Header.Get("X-Api-Key"); k {
			case "":
				return "", errors.New("no key")
			case "internal":
				return "", fmt.Errorf("probe: %w", httplimit.ErrSkip)
			default:
				return "apikey:" + k, nil
			}
		}),
		httplimit.WithCostFunc(func(r *http.Request) int {
			if r.Method == http.MethodPost {
				return 4
			}
			return 1
		}),
		httplimit.WithExcludedPaths("/healthz", "/static/"),
		httplimit.WithFailOpen(true),
	)
	srv := serve(t, mw(&h))
	key := func(k string) map[string]string { return map[string]string{"X-Api-Key": k} }

	do(t, srv, "GET", "/", key("a"))
	do(t, srv, "POST", "/", key("a"))
	if got := keys.take(); !slices.Equal(got, []string{"apikey:a/1", "apikey:a/4"}) {
		t.Fatalf("keys %q", got)
	}
	r := do(t, srv, "GET", "/", key("a"))
	wantItem(t, r.header, "RateLimit", "default", "r", 4, "t", 6)
	keys.take()

	for _, p := range []string{"/healthz", "/static/app.js", "/static/"} {
		if r := do(t, srv, "GET", p, nil); r.status != 200 || r.header.Get("RateLimit") != "" {
			t.Fatalf("%s: %d %v", p, r.status, r.header)
		}
	}
	if r := do(t, srv, "GET", "/healthz/x", nil); r.status != 400 {
		t.Fatalf("/healthz/x is not excluded: %d", r.status)
	}
	if r := do(t, srv, "GET", "/", key("internal")); r.status != 200 || r.header.Get("RateLimit") != "" {
		t.Fatalf("skip: %d %v", r.status, r.header)
	}
	r = do(t, srv, "GET", "/", nil)
	if r.status != 400 || r.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("no key: %d %v", r.status, r.header)
	}
	if got := keys.take(); len(got) != 0 {
		t.Fatalf("limiter consulted for exempt requests: %q", got)
	}

	// A cost above capacity is refused even though the middleware fails
	// open: otherwise an oversized request would bypass the limit.
	big := serve(t, httplimit.Middleware(l, httplimit.WithFailurePolicy(failure.Open),
		httplimit.WithCostFunc(func(*http.Request) int { return 11 }))(&h))
	before := h.count()
	r = do(t, big, "GET", "/", nil)
	if r.status != 429 || r.header.Get("Retry-After") != "" || h.count() != before {
		t.Fatalf("cost above capacity: %d %v", r.status, r.header)
	}
	wantItem(t, r.header, "RateLimit-Policy", "default", "q", 10, "w", 10)
}

func TestFailOpenAndClosed(t *testing.T) {
	l, _ := newLimiter(t, flux.Limit{Rate: 1})
	l.Close() // every check now fails with ErrClosed
	var h served
	closed := serve(t, httplimit.Middleware(l)(&h))
	open := serve(t, httplimit.Middleware(l, httplimit.WithFailurePolicy(failure.Open))(&h))

	r := do(t, closed, "GET", "/", nil)
	if r.status != 503 || h.count() != 0 || r.header.Get("Content-Type") != "application/problem+json" ||
		!strings.Contains(r.body, `"status":503`) {
		t.Fatalf("fail closed: %d %q", r.status, r.body)
	}
	r = do(t, open, "GET", "/", nil)
	if r.status != 200 || h.count() != 1 || r.header.Get("RateLimit") != "" {
		t.Fatalf("fail open: %d %v", r.status, r.header)
	}
}

func TestRoutes(t *testing.T) {
	def, _ := newLimiter(t, flux.Limit{Rate: 100, Burst: 99})
	login, _ := newLimiter(t, flux.Limit{Rate: 1.0 / 60, Burst: 2}) // 3 per 3 minutes
	var h served
	srv := serve(t, httplimit.Middleware(def,
		httplimit.WithRoute("POST /login", "login", login),
		httplimit.WithRoute("/admin/", "admin", nil), // not limited
	)(&h))

	for i := range 3 {
		r := do(t, srv, "POST", "/login", nil)
		if r.status != 200 {
			t.Fatalf("login %d: %d", i, r.status)
		}
		wantItem(t, r.header, "RateLimit-Policy", "login", "q", 3, "w", 180)
	}
	if r := do(t, srv, "POST", "/login", nil); r.status != 429 || r.header.Get("Retry-After") != "60" {
		t.Fatalf("4th login: %d %q", r.status, r.header.Get("Retry-After"))
	}
	// Other routes use the default limiter.
	r := do(t, srv, "GET", "/login", nil)
	wantItem(t, r.header, "RateLimit-Policy", "default", "q", 100, "w", 1)
	r = do(t, srv, "GET", "/admin/users", nil)
	if r.status != 200 || r.header.Get("RateLimit") != "" {
		t.Fatalf("admin: %d %v", r.status, r.header)
	}

	// No default limiter: only routes are limited.
	srv2 := serve(t, httplimit.Middleware(nil, httplimit.WithRoute("/x", "x", login))(&h))
	if r := do(t, srv2, "GET", "/y", nil); r.status != 200 || r.header.Get("RateLimit") != "" {
		t.Fatalf("no default: %d %v", r.status, r.header)
	}
}

// fakeNode is a NodeClient over a local limiter: the adapter's contract,
// without NATS (the flux-node path is tested in node_test.go).
type nodeOverLimiter map[string]*flux.Limiter

func (n nodeOverLimiter) Check(ctx context.Context, limiter, key string, cost int) (flux.Decision, error) {
	l, ok := n[limiter]
	if !ok {
		return flux.Decision{}, errors.New("404 unknown limiter")
	}
	return l.CheckN(ctx, key, cost)
}

func TestRemoteAdapter(t *testing.T) {
	l, _ := newLimiter(t, flux.Limit{Rate: 10, Burst: 1})
	node := nodeOverLimiter{"api": l}
	var h served
	with := serve(t, httplimit.Middleware(nil, httplimit.WithChecker(httplimit.Remote(node, "api", flux.Limit{Rate: 10, Burst: 1})))(&h))
	without := serve(t, httplimit.Middleware(nil, httplimit.WithChecker(httplimit.Remote(node, "api", flux.Limit{})))(&h))
	r := do(t, with, "GET", "/", nil)
	wantItem(t, r.header, "RateLimit-Policy", "default", "q", 2, "w", 1)
	r = do(t, without, "GET", "/", nil)
	wantItem(t, r.header, "RateLimit-Policy", "default", "q", 2) // w unknown: omitted
	if r := do(t, without, "GET", "/", nil); r.status != 429 {
		t.Fatalf("third: %d", r.status)
	}
	missing := serve(t, httplimit.Middleware(nil, httplimit.WithChecker(httplimit.Remote(node, "nope", flux.Limit{})))(&h))
	if r := do(t, missing, "GET", "/", nil); r.status != 503 {
		t.Fatalf("unknown limiter: %d", r.status)
	}
}

func TestTracing(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	l, _ := newLimiter(t, flux.Limit{Rate: 1})
	var h served
	srv := serve(t, httplimit.Middleware(l, httplimit.WithTracer(tracing.New(tp)))(&h))

	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	do(t, srv, "GET", "/", map[string]string{"traceparent": parent})
	do(t, srv, "GET", "/", map[string]string{"traceparent": parent})
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want one per request", len(spans))
	}
	for i, want := range []string{"allowed", "denied"} {
		s := spans[i]
		if s.SpanKind() != trace.SpanKindServer || s.Parent().TraceID().String() != "0af7651916cd43dd8448eb211c80319c" ||
			s.Parent().SpanID().String() != "b7ad6b7169203331" {
			t.Fatalf("span %d: kind %v parent %v", i, s.SpanKind(), s.Parent())
		}
		var dec, lim string
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case tracing.AttrDecision:
				dec = kv.Value.AsString()
			case tracing.AttrLimiter:
				lim = kv.Value.AsString()
			case tracing.AttrKey:
				t.Fatal("key recorded without WithKeys")
			}
		}
		if dec != want || lim != "default" {
			t.Fatalf("span %d: decision %q limiter %q", i, dec, lim)
		}
	}
	// Without a Tracer no span is started.
	srv2 := serve(t, httplimit.Middleware(l, httplimit.WithTracer(tracing.New(nil)))(&h))
	do(t, srv2, "GET", "/", nil)
	if len(rec.Ended()) != 2 {
		t.Fatal("span started without a tracer")
	}
}
