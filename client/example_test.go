package client_test

import (
	"context"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/node"
)

// A Go service checks limits held by a flux-node over NATS. Here the node
// is started in-process so that the example runs alone; a real service
// connects to its NATS deployment instead.
func ExampleClient_Check() {
	ctx := context.Background()
	url, stop := startNode()
	defer stop()

	nc, err := nats.Connect(url)
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	c := client.New(nc)

	for range 3 {
		d, err := c.Check(ctx, "api", "alice", 1)
		if err != nil {
			panic(err)
		}
		fmt.Printf("allowed=%v remaining=%d\n", d.Allowed, d.Remaining)
	}
	// A batch: one request, one reply.
	res, err := c.CheckBatch(ctx, []client.Request{{Limiter: "api", Key: "bob"}, {Limiter: "api", Key: "alice"}})
	if err != nil {
		panic(err)
	}
	for _, r := range res {
		fmt.Printf("batch: allowed=%v err=%v\n", r.Decision.Allowed, r.Err)
	}
	// Output:
	// allowed=true remaining=1
	// allowed=true remaining=0
	// allowed=false remaining=0
	// batch: allowed=true err=<nil>
	// batch: allowed=false err=<nil>
}

// startNode starts a flux-node with the limiter "api" (capacity 2) on a
// free port and returns its URL and how to stop it.
func startNode() (string, func()) {
	dir, err := os.MkdirTemp("", "flux-client-example")
	if err != nil {
		panic(err)
	}
	cfg := node.DefaultConfig()
	cfg.NATSListen, cfg.HTTPListen, cfg.DataDir = "127.0.0.1:-1", "", dir
	cfg.Limiters = map[string]node.LimiterConfig{"api": {Rate: 1, Burst: 1}}
	n, err := node.New(cfg, nil)
	if err != nil {
		panic(err)
	}
	if err := n.Start(context.Background()); err != nil {
		panic(err)
	}
	return n.ClientURL(), func() {
		n.Shutdown(context.Background())
		os.RemoveAll(dir)
	}
}
