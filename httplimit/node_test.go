package httplimit_test

import (
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/failure"
	"github.com/fluxlimiter/flux/httplimit"
	"github.com/fluxlimiter/flux/node"
	"github.com/fluxlimiter/flux/node/nodetest"
)

// startNode starts an in-process flux-node on random loopback ports with
// the limiter "api" (1/s, burst 1: capacity 2).
func startNode(t *testing.T) *node.Node {
	t.Helper()
	return nodetest.Start(t, nodetest.Config(t, map[string]node.LimiterConfig{"api": {Rate: 1, Burst: 1}}))
}

// limitOf finds a GCRA limiter's limit among the node's limiters.
func limitOf(t *testing.T, c *client.Client, name string) flux.Limit {
	t.Helper()
	infos, err := c.Limiters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.Name == name && in.Rate != nil && in.Burst != nil {
			return flux.Limit{Rate: *in.Rate, Burst: *in.Burst}
		}
	}
	t.Fatalf("no GCRA limiter %q in %+v", name, infos)
	return flux.Limit{}
}

// Real requests through a real flux-node: the middleware checks with the
// Go client over NATS.
func TestThroughFluxNode(t *testing.T) {
	n := startNode(t)
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc)
	var h served
	srv := serve(t, httplimit.Middleware(nil,
		httplimit.WithChecker(httplimit.Remote(c, "api", limitOf(t, c, "api"))))(&h))

	for i := range 2 {
		r := do(t, srv, "GET", "/", nil)
		if r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		wantItem(t, r.header, "RateLimit-Policy", "default", "q", 2, "w", 2)
		wantItem(t, r.header, "RateLimit", "default", "r", 1-i, "t", i+1)
	}
	r := do(t, srv, "GET", "/", nil)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" || h.count() != 2 {
		t.Fatalf("third: %d %v (served %d)", r.status, r.header, h.count())
	}

	// An unknown limiter on the node is a limiter failure: 503 when
	// failing closed, served when failing open.
	bad := serve(t, httplimit.Middleware(nil, httplimit.WithChecker(httplimit.Remote(c, "nope", flux.Limit{})))(&h))
	if r := do(t, bad, "GET", "/", nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("unknown limiter: %d", r.status)
	}
	open := serve(t, httplimit.Middleware(nil, httplimit.WithFailurePolicy(failure.Open),
		httplimit.WithChecker(httplimit.Remote(c, "nope", flux.Limit{})))(&h))
	if r := do(t, open, "GET", "/", nil); r.status != 200 {
		t.Fatalf("unknown limiter, fail open: %d", r.status)
	}
}
