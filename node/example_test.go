package node_test

import (
	"context"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/node"
)

// A program embeds a flux-node: it starts the node (with its own NATS
// server, here on a free loopback port), and serves checks to any client
// until Shutdown.
func ExampleNew() {
	dir, err := os.MkdirTemp("", "flux-node-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	cfg := node.DefaultConfig()
	cfg.NATSListen = "127.0.0.1:-1" // a free port
	cfg.HTTPListen = ""             // no /metrics, /healthz, /readyz
	cfg.DataDir = dir
	cfg.Limiters = map[string]node.LimiterConfig{"api": {Rate: 10, Burst: 1}}
	n, err := node.New(cfg, nil)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := n.Start(ctx); err != nil {
		panic(err)
	}
	defer n.Shutdown(ctx)

	// The program's own limiter, without going through NATS.
	l, _ := n.Limiter("api")
	d, err := l.Check(ctx, "alice")
	fmt.Println("in process: allowed =", d.Allowed, err)

	// The same limiter, over NATS.
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	d, err = client.New(nc).Check(ctx, "api", "alice", 1)
	fmt.Println("over NATS: allowed =", d.Allowed, err)
	d, err = client.New(nc).Check(ctx, "api", "alice", 1)
	fmt.Println("again: allowed =", d.Allowed, err)
	// Output:
	// in process: allowed = true <nil>
	// over NATS: allowed = true <nil>
	// again: allowed = false <nil>
}
