// Package httplimit is net/http middleware that rate-limits requests with a
// flux.Limiter, or with a flux-node through its Go client, and describes
// the limit to clients in the RateLimit-Policy and RateLimit fields of
// draft-ietf-httpapi-ratelimit-headers-10.
//
// Every answered request carries
//
//	RateLimit-Policy: "default";q=6;w=1
//	RateLimit: "default";r=5;t=1
//
// where q is the limit's capacity (burst + 1 for GCRA and the buckets, the
// limit per window for the window algorithms), w the seconds it takes to
// refill from empty (the window's length for the window algorithms; rounded
// up; omitted when the Checker cannot tell), r the requests remaining and t
// the seconds until the key is back at full capacity (Decision.ResetAfter,
// rounded up). A denied request is
// answered 429 Too Many Requests with Retry-After (Decision.RetryAfter in
// seconds, rounded up) and an application/problem+json body (RFC 9457);
// the handler is not called. No header parameter ever carries the client's
// key.
//
// By default requests are keyed by client IP address: the connection's
// remote address, or, only when that address is one of the trusted proxies
// (WithTrustedProxies), the rightmost address of X-Forwarded-For that is
// not itself a trusted proxy. X-Forwarded-For is never believed from an
// untrusted peer. IPv6 clients are keyed by their /64 (WithIPv6Prefix).
package httplimit

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"math/bits"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/failure"
	"github.com/fluxlimiter/flux/tracing"
)

// Checker is what the middleware needs from a limiter: a check of cost for
// key. *flux.Limiter satisfies it; Remote adapts a flux-node client.
// Implementations must be safe for simultaneous use.
type Checker interface {
	CheckN(ctx context.Context, key string, cost int) (flux.Decision, error)
}

// LimitReporter is an optional capability of a Checker: reporting the
// limit in force, from which the middleware computes the w parameter of
// RateLimit-Policy. *flux.Limiter has it.
type LimitReporter interface {
	Limit() flux.Limit
}

// CheckerFunc adapts a function to Checker; the function must be safe for
// simultaneous use.
type CheckerFunc func(ctx context.Context, key string, cost int) (flux.Decision, error)

// CheckN calls f.
func (f CheckerFunc) CheckN(ctx context.Context, key string, cost int) (flux.Decision, error) {
	return f(ctx, key, cost)
}

// NodeClient is the method of a flux-node client (the client package's
// *Client, which is safe for simultaneous use) that Remote uses.
type NodeClient interface {
	Check(ctx context.Context, limiter, key string, cost int) (flux.Decision, error)
}

// Remote returns a Checker that checks the limiter named limiter of a
// flux-node through c. If lim is the limit configured for that limiter on
// the node, the Checker reports it (LimitReporter) so RateLimit-Policy
// carries w; with the zero Limit, w is omitted. The Checker is safe for
// simultaneous use if c is.
func Remote(c NodeClient, limiter string, lim flux.Limit) Checker {
	if lim.Validate() != nil {
		return remote{c: c, name: limiter}
	}
	return remoteLimit{remote{c: c, name: limiter}, lim}
}

type remote struct {
	c    NodeClient
	name string
}

func (r remote) CheckN(ctx context.Context, key string, cost int) (flux.Decision, error) {
	return r.c.Check(ctx, r.name, key, cost)
}

type remoteLimit struct {
	remote
	lim flux.Limit
}

func (r remoteLimit) Limit() flux.Limit { return r.lim }

// ErrSkip, returned by a key function, lets the request through without
// checking any limit (an allowlisted client, an internal probe).
var ErrSkip = errors.New("httplimit: skip rate limiting")

// Option configures the middleware.
type Option func(*config)

type route struct {
	name string // policy name, already a quoted sf-string
	c    Checker
}

type config struct {
	keyFunc  func(*http.Request) (string, error)
	costFunc func(*http.Request) int
	trusted  []netip.Prefix
	v6bits   int
	def      route
	mux      *http.ServeMux // route patterns; nil when none
	routes   map[string]route
	onFail   failure.Policy
	exact    map[string]bool // excluded paths
	prefixes []string        // excluded path prefixes
	legacy   bool
	tracer   *tracing.Tracer
	logger   *slog.Logger
}

// WithKeyFunc sets how a request's key is found (default: the client IP,
// as described in the package documentation). A key function returning
// ErrSkip exempts the request; any other error answers 400 Bad Request.
func WithKeyFunc(f func(*http.Request) (string, error)) Option {
	return func(c *config) {
		if f != nil {
			c.keyFunc = f
		}
	}
}

// WithCostFunc sets each request's cost (default 1). A cost above the
// limit's capacity can never be admitted: such a request is answered 429
// without Retry-After, whatever the failure policy.
func WithCostFunc(f func(*http.Request) int) Option {
	return func(c *config) {
		if f != nil {
			c.costFunc = f
		}
	}
}

// WithTrustedProxies lists the proxies (addresses or networks, such as
// netip.MustParsePrefix("10.0.0.0/8")) whose X-Forwarded-For the default
// key function believes. A single address is a /32 or /128 prefix.
func WithTrustedProxies(prefixes ...netip.Prefix) Option {
	return func(c *config) {
		for _, p := range prefixes {
			if p.IsValid() {
				c.trusted = append(c.trusted, p.Masked())
			}
		}
	}
}

// WithIPv6Prefix sets how many leading bits of an IPv6 client address form
// its key (default 64, since one subscriber usually holds a whole /64;
// 128 keys each address apart). Values outside 1 to 128 are ignored.
func WithIPv6Prefix(bits int) Option {
	return func(c *config) {
		if bits >= 1 && bits <= 128 {
			c.v6bits = bits
		}
	}
}

// WithName sets the policy name of the default limiter in the RateLimit
// fields (default "default").
func WithName(name string) Option {
	return func(c *config) { c.def.name = sfString(name) }
}

// WithChecker checks requests with ch instead of the Limiter given to
// Middleware (for a flux-node, Remote(client, "api", limit)).
func WithChecker(ch Checker) Option {
	return func(c *config) {
		if ch != nil {
			c.def.c = ch
		}
	}
}

// WithRoute checks the requests that match pattern (an http.ServeMux
// pattern such as "POST /login" or "/api/"; the most specific pattern
// wins) with ch, under the policy name name. Requests that match no route
// use the default limiter; a nil ch leaves the route's requests unlimited.
// Like http.ServeMux.Handle, it panics when the middleware is built if a
// pattern is invalid or conflicts with another.
func WithRoute(pattern, name string, ch Checker) Option {
	return func(c *config) {
		if c.mux == nil {
			c.mux = http.NewServeMux()
			c.routes = make(map[string]route)
		}
		c.mux.Handle(pattern, http.NotFoundHandler())
		c.routes[pattern] = route{name: sfString(name), c: ch}
	}
}

// WithFailurePolicy sets what happens when the limiter fails (overloaded,
// closed, unreachable): with failure.Open the request is served without a
// limit; with failure.Closed, or failure.Local (the default: the
// middleware has no local view of the limit), it is answered 503 Service
// Unavailable. An unknown policy is read as failure.Closed.
func WithFailurePolicy(p failure.Policy) Option { return func(c *config) { c.onFail = p } }

// WithFailOpen serves requests without a limit when the limiter fails if
// open is true, and answers them 503 otherwise.
//
// Deprecated: use WithFailurePolicy(failure.Open), the vocabulary the
// store and the cluster share.
func WithFailOpen(open bool) Option {
	return func(c *config) {
		c.onFail = failure.Closed
		if open {
			c.onFail = failure.Open
		}
	}
}

// WithExcludedPaths exempts requests whose URL path is one of paths (such
// as "/healthz"); a path ending in "/" exempts every path under it.
func WithExcludedPaths(paths ...string) Option {
	return func(c *config) {
		for _, p := range paths {
			if strings.HasSuffix(p, "/") {
				c.prefixes = append(c.prefixes, p)
			} else {
				c.exact[p] = true
			}
		}
	}
}

// WithLegacyHeaders adds X-RateLimit-Limit (q), X-RateLimit-Remaining (r)
// and X-RateLimit-Reset (t, seconds from now) for older clients.
func WithLegacyHeaders() Option { return func(c *config) { c.legacy = true } }

// WithTracer starts a span for each checked request (tracing.New; a nil
// Tracer starts none): a child of the request's span if it has one,
// otherwise a server span whose parent is the trace context in the
// request's headers.
func WithTracer(t *tracing.Tracer) Option { return func(c *config) { c.tracer = t } }

// WithLogger reports limiter failures (default: not reported).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// Middleware returns net/http middleware that checks every request with l
// (or the Checker of WithChecker or WithRoute) before calling the next
// handler. If l is nil and no WithChecker is given, requests that match
// no route are not limited. The returned middleware is safe for
// simultaneous use.
func Middleware(l *flux.Limiter, opts ...Option) func(http.Handler) http.Handler {
	c := &config{v6bits: 64, exact: map[string]bool{}, def: route{name: sfString("default")}}
	if l != nil {
		c.def.c = l
	}
	for _, o := range opts {
		o(c)
	}
	if c.keyFunc == nil {
		c.keyFunc = c.clientIP
	}
	return func(next http.Handler) http.Handler {
		return &handler{c: c, next: next}
	}
}

type handler struct {
	c    *config
	next http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := h.c
	if c.excluded(r.URL.Path) {
		h.next.ServeHTTP(w, r)
		return
	}
	rt := c.route(r)
	if rt.c == nil {
		h.next.ServeHTTP(w, r)
		return
	}
	key, err := c.keyFunc(r)
	if err != nil {
		if errors.Is(err, ErrSkip) {
			h.next.ServeHTTP(w, r)
			return
		}
		problem(w, http.StatusBadRequest, "No rate-limit key could be found for this request.")
		return
	}
	cost := 1
	if c.costFunc != nil {
		cost = c.costFunc(r)
	}
	ctx := r.Context()
	var sp tracing.Span
	if c.tracer != nil {
		ctx, sp = h.startSpan(r)
		defer sp.End()
		sp.Check(unquote(rt.name), key, cost)
		r = r.WithContext(ctx)
	}
	d, err := rt.c.CheckN(ctx, key, cost)
	sp.Result(d, err)
	if err != nil {
		h.failed(w, r, rt, err)
		return
	}
	c.setFields(w.Header(), rt, d)
	if !d.Allowed {
		denied(w, d)
		return
	}
	h.next.ServeHTTP(w, r)
}

func (h *handler) startSpan(r *http.Request) (context.Context, tracing.Span) {
	ctx := r.Context()
	kind := trace.SpanKindInternal
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = h.c.tracer.Extract(ctx, propagation.HeaderCarrier(r.Header))
		kind = trace.SpanKindServer
	}
	ctx, sp := h.c.tracer.Start(ctx, "ratelimit.check", kind)
	if s := sp.Span(); s != nil && s.IsRecording() {
		s.SetAttributes(attribute.String("http.request.method", r.Method))
	}
	return ctx, sp
}

// failed answers a request whose check failed.
func (h *handler) failed(w http.ResponseWriter, r *http.Request, rt route, err error) {
	if errors.Is(err, flux.ErrCostExceedsCapacity) {
		// No wait would admit it, and failing open would let anyone past
		// the limit with an oversized request.
		h.c.setPolicy(w.Header(), rt, 0)
		problem(w, http.StatusTooManyRequests, "The request costs more than the rate limit's capacity.")
		return
	}
	if r.Context().Err() != nil {
		return // the client went away
	}
	if h.c.logger != nil {
		h.c.logger.LogAttrs(r.Context(), slog.LevelWarn, "httplimit: limiter failed",
			slog.String("policy", unquote(rt.name)), slog.Bool("fail_open", h.c.onFail == failure.Open), slog.Any("error", err))
	}
	if h.c.onFail == failure.Open {
		h.next.ServeHTTP(w, r)
		return
	}
	problem(w, http.StatusServiceUnavailable, "The rate limiter is unavailable.")
}

func (c *config) excluded(path string) bool {
	if c.exact[path] {
		return true
	}
	for _, p := range c.prefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

func (c *config) route(r *http.Request) route {
	if c.mux != nil {
		if _, pattern := c.mux.Handler(r); pattern != "" {
			if rt, ok := c.routes[pattern]; ok {
				return rt
			}
		}
	}
	return c.def
}

// Canonical header keys, set directly to skip canonicalising them per
// request.
const (
	hPolicy     = "Ratelimit-Policy" // RateLimit-Policy
	hRateLimit  = "Ratelimit"        // RateLimit
	hRetryAfter = "Retry-After"
	hLegacyLim  = "X-Ratelimit-Limit"
	hLegacyRem  = "X-Ratelimit-Remaining"
	hLegacyRes  = "X-Ratelimit-Reset"
)

// setFields sets RateLimit-Policy and RateLimit (and the legacy fields).
// Both values are built in one buffer and share one backing array, so the
// two fields cost three allocations together.
func (c *config) setFields(h http.Header, rt route, d flux.Decision) {
	remaining := int64(max(d.Remaining, 0))
	t := ceilSeconds(d.ResetAfter)
	var buf [256]byte
	b := c.appendPolicy(buf[:0], rt, d.Limit)
	split := len(b)
	b = append(b, rt.name...)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, t, 10)
	all := string(b)
	vals := make([]string, 2)
	vals[0], vals[1] = all[:split], all[split:]
	if split > 0 {
		h[hPolicy] = vals[0:1:1]
	}
	h[hRateLimit] = vals[1:2:2]
	if c.legacy {
		h[hLegacyLim] = []string{strconv.Itoa(d.Limit)}
		h[hLegacyRem] = []string{strconv.FormatInt(remaining, 10)}
		h[hLegacyRes] = []string{strconv.FormatInt(t, 10)}
	}
}

// setPolicy sets RateLimit-Policy alone (when there is no decision).
func (c *config) setPolicy(h http.Header, rt route, q int) {
	if b := c.appendPolicy(nil, rt, q); len(b) > 0 {
		h[hPolicy] = []string{string(b)}
	}
}

// appendPolicy appends the RateLimit-Policy value for a limit of capacity
// q (taken from the limit itself when q is 0), or nothing if q is unknown.
func (c *config) appendPolicy(b []byte, rt route, q int) []byte {
	var lim flux.Limit
	lr, ok := rt.c.(LimitReporter)
	if ok {
		lim = lr.Limit()
		if q == 0 {
			q = lim.Capacity()
		}
	}
	if q <= 0 {
		return b
	}
	b = append(b, rt.name...)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, int64(q), 10)
	if ok {
		if w := refillSeconds(lim, q); w > 0 {
			b = append(b, ";w="...)
			b = strconv.AppendInt(b, w, 10)
		}
	}
	return b
}

// refillSeconds is the w parameter for lim: for the rate algorithms (GCRA,
// token and leaky bucket) the time a key of capacity q takes to refill
// from empty, q emission intervals of round(1e9/Rate) ns; for the window
// algorithms the window's length; in seconds rounded up. It is 0 (w
// omitted) when unknown, as for calendar months, whose length varies.
func refillSeconds(lim flux.Limit, q int) int64 {
	switch lim.Algorithm {
	case "", flux.GCRA, flux.TokenBucket, flux.LeakyBucket:
	case flux.FixedWindow, flux.SlidingWindow, flux.SlidingWindowLog:
		if lim.Window > 0 {
			return ceilSeconds(lim.Window)
		}
		switch lim.Calendar {
		case flux.CalendarMinute:
			return 60
		case flux.CalendarHour:
			return 3600
		case flux.CalendarDay:
			return 86400
		case flux.CalendarWeek:
			return 7 * 86400
		}
		return 0
	default:
		return 0
	}
	if !(lim.Rate > 0) || lim.Rate > 1e9 || q <= 0 {
		return 0
	}
	t := math.Round(1e9 / lim.Rate)
	if t >= 1<<62 {
		return math.MaxInt64
	}
	hi, lo := bits.Mul64(uint64(q), uint64(t))
	if hi != 0 {
		return math.MaxInt64
	}
	s := lo / 1e9
	if lo%1e9 != 0 {
		s++
	}
	return int64(min(s, math.MaxInt64))
}

// ceilSeconds rounds d up to whole seconds.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

// denied answers 429 with Retry-After and a problem body.
func denied(w http.ResponseWriter, d flux.Decision) {
	ra := ceilSeconds(d.RetryAfter)
	w.Header()[hRetryAfter] = []string{strconv.FormatInt(ra, 10)}
	unit := " seconds."
	if ra == 1 {
		unit = " second."
	}
	problem(w, http.StatusTooManyRequests, "Rate limit exceeded. Retry after "+strconv.FormatInt(ra, 10)+unit)
}

// problem writes an RFC 9457 problem document. detail is server text,
// never client input, so it needs no escaping beyond JSON's (it has none
// of the characters that would).
func problem(w http.ResponseWriter, status int, detail string) {
	h := w.Header()
	h["Content-Type"] = []string{"application/problem+json"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"type":"about:blank","title":"` + http.StatusText(status) +
		`","status":` + strconv.Itoa(status) + `,"detail":"` + detail + `"}` + "\n"))
}

// sfString quotes name as a structured-field String (RFC 9651): printable
// ASCII only, with `"` and `\` escaped; other bytes are dropped.
func sfString(name string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(name); i++ {
		ch := name[i]
		switch {
		case ch == '"' || ch == '\\':
			b.WriteByte('\\')
			b.WriteByte(ch)
		case ch >= 0x20 && ch <= 0x7e:
			b.WriteByte(ch)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// unquote reverses sfString, for logs and spans.
func unquote(s string) string {
	s = strings.TrimSuffix(strings.TrimPrefix(s, `"`), `"`)
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	return strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(s)
}

// clientIP is the default key function.
func (c *config) clientIP(r *http.Request) (string, error) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		// Not host:port (a Unix socket, a test harness): key on it whole.
		if a, err := netip.ParseAddr(r.RemoteAddr); err == nil {
			return c.keyOf(a), nil
		}
		if r.RemoteAddr == "" {
			return "", errors.New("httplimit: request has no remote address")
		}
		return r.RemoteAddr, nil
	}
	addr := peer.Addr().Unmap()
	if c.isTrusted(addr) {
		addr = c.forwardedFor(r, addr)
	}
	return c.keyOf(addr), nil
}

func (c *config) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedFor walks X-Forwarded-For from the right, past trusted proxies,
// and returns the first address that is not one: the client as the
// nearest trusted proxy saw it. An unparsable entry ends the walk at the
// last address known good; so does the end of the list.
func (c *config) forwardedFor(r *http.Request, peer netip.Addr) netip.Addr {
	lines := r.Header.Values("X-Forwarded-For")
	last := peer
	for i := len(lines) - 1; i >= 0; i-- {
		line := lines[i]
		for line != "" {
			j := strings.LastIndexByte(line, ',')
			item := strings.TrimSpace(line[j+1:])
			if j < 0 {
				line = ""
			} else {
				line = line[:j]
			}
			if item == "" {
				continue
			}
			a, ok := parseHop(item)
			if !ok {
				return last
			}
			if !c.isTrusted(a) {
				return a
			}
			last = a
		}
	}
	return last
}

// parseHop parses an X-Forwarded-For element: an address, possibly with a
// port, possibly bracketed.
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// keyOf is the key of a client address: the address, or for IPv6 its
// network of v6bits bits.
func (c *config) keyOf(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() && c.v6bits < 128 {
		if p, err := a.WithZone("").Prefix(c.v6bits); err == nil {
			return p.String()
		}
	}
	return a.WithZone("").String()
}
