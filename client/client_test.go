package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/node"
	"github.com/fluxlimiter/flux/node/nodetest"
	"github.com/fluxlimiter/flux/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func start(t *testing.T) (*client.Client, *nats.Conn) {
	t.Helper()
	cfg := nodetest.Config(t, map[string]node.LimiterConfig{
		"api":  {Rate: 100, Burst: 20},
		"slow": {Rate: 1},
	})
	cfg.MaxKeyLen = 8
	cfg.MaxBatch = 3
	cfg.Handlers = 1
	nc := nodetest.Connect(t, nodetest.Start(t, cfg))
	return client.New(nc), nc
}

func TestCheck(t *testing.T) {
	c, _ := start(t)
	d, err := c.Check(t.Context(), "api", "alice", 1)
	want := flux.Decision{Allowed: true, Limit: 21, Remaining: 20, ResetAfter: 10 * time.Millisecond}
	if err != nil || d != want {
		t.Fatalf("Check = %+v, %v; want %+v", d, err, want)
	}
	if _, err := c.Check(t.Context(), "slow", "bob", 1); err != nil {
		t.Fatal(err)
	}
	d, err = c.Check(t.Context(), "slow", "bob", 1)
	if err != nil || d.Allowed || d.RetryAfter <= 0 {
		t.Fatalf("second slow check = %+v, %v; want a denial (not an error)", d, err)
	}
}

func TestTypedErrors(t *testing.T) {
	c, _ := start(t)
	for _, tt := range []struct {
		limiter, key string
		cost         int
		want         error
		code         int
	}{
		{"api", "", 1, flux.ErrEmptyKey, 400},
		{"api", "toolongkey", 1, flux.ErrKeyTooLong, 400},
		{"api", "k", -1, flux.ErrInvalidCost, 400},
		{"api", "k", 22, flux.ErrCostExceedsCapacity, 400},
		{"nope", "k", 1, client.ErrUnknownLimiter, 404},
		{"", "k", 1, client.ErrBadRequest, 400},
	} {
		_, err := c.Check(t.Context(), tt.limiter, tt.key, tt.cost)
		var ce *client.Error
		if !errors.Is(err, tt.want) || !errors.As(err, &ce) || ce.Code != tt.code || ce.Description == "" {
			t.Errorf("Check(%q, %q, %d) = %v; want %v with code %d", tt.limiter, tt.key, tt.cost, err, tt.want, tt.code)
		}
	}
}

func TestCheckBatch(t *testing.T) {
	c, _ := start(t)
	res, err := c.CheckBatch(t.Context(), []client.Request{
		{Limiter: "api", Key: "a", Cost: 2},
		{Limiter: "nope", Key: "a", Cost: 1},
		{Limiter: "slow", Key: "a", Cost: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := res[0].Decision; res[0].Err != nil || !d.Allowed || d.Remaining != 19 {
		t.Errorf("item 0 = %+v", res[0])
	}
	if !errors.Is(res[1].Err, client.ErrUnknownLimiter) {
		t.Errorf("item 1 = %+v, want ErrUnknownLimiter", res[1])
	}
	if d := res[2].Decision; res[2].Err != nil || !d.Allowed || d.Limit != 1 {
		t.Errorf("item 2 = %+v", res[2])
	}
	// More than max_batch (3): the whole request fails with ErrTooLarge.
	_, err = c.CheckBatch(t.Context(), make([]client.Request, 4))
	if !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("4 items: %v, want ErrTooLarge", err)
	}
	out := make([]client.Result, 1)
	if err := c.CheckBatchInto(t.Context(), make([]client.Request, 2), out); err == nil {
		t.Fatal("CheckBatchInto with a short out slice succeeded")
	}
}

func TestLimiters(t *testing.T) {
	c, _ := start(t)
	ls, err := c.Limiters(t.Context())
	if err != nil || len(ls) != 2 || ls[0].Name != "api" || *ls[0].Rate != 100 || *ls[0].Burst != 20 || ls[0].Capacity != 21 || ls[1].Algorithm != "gcra" {
		t.Fatalf("Limiters = %+v, %v", ls, err)
	}
}

func TestTransportErrors(t *testing.T) {
	// A bare NATS server: nobody serves flux.v1.check at first.
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
	defer nc.Close()
	c := client.New(nc, client.WithTimeout(200*time.Millisecond))
	if _, err := c.Check(t.Context(), "api", "k", 1); !errors.Is(err, nats.ErrNoResponders) || !strings.Contains(err.Error(), "flux.v1.check") {
		t.Fatalf("no node: %v, want ErrNoResponders naming the subject", err)
	}
	// A responder that never answers: the client's timeout applies.
	sub, err := nc.Subscribe(protocol.SubjectCheck, func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Check(context.Background(), "api", "k", 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent responder: %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("timeout took %v, want about 200ms", el)
	}
	// A responder that answers garbage.
	sub2, err := nc.Subscribe(protocol.SubjectCheckBatch, func(m *nats.Msg) { m.Respond([]byte("garbage")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Unsubscribe()
	if _, err := c.CheckBatch(t.Context(), []client.Request{{Limiter: "a", Key: "b"}}); !errors.Is(err, client.ErrBadReply) {
		t.Fatalf("garbage reply: %v, want ErrBadReply", err)
	}
}
