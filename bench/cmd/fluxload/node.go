package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux/node"
)

// nodeOptions are the settings of an in-process flux-node.
type nodeOptions struct {
	limiter  string
	rate     float64
	burst    float64
	handlers int
	shards   int
	maxBatch int
}

// startNode starts a flux-node in this process with an embedded NATS
// server on a random loopback port and the HTTP admin endpoints on a
// random loopback port, serving one limiter. It returns the NATS URL and
// a function that stops the node and removes its data directory, and the
// connection options with the node's own rights (for the echo responder
// and its load: clients may publish only on flux.v1.>).
func startNode(ctx context.Context, o nodeOptions) (string, func(), []nats.Option, error) {
	dir, err := os.MkdirTemp("", "fluxload-node-")
	if err != nil {
		return "", nil, nil, err
	}
	cfg := node.DefaultConfig()
	cfg.NATSListen = "127.0.0.1:-1"
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.DataDir = dir
	cfg.NodeID = "fluxload"
	cfg.Handlers = o.handlers
	cfg.Shards = o.shards
	if o.maxBatch > cfg.MaxBatch {
		cfg.MaxBatch = o.maxBatch
	}
	cfg.Limiters = map[string]node.LimiterConfig{o.limiter: {Rate: o.rate, Burst: o.burst}}
	n, err := node.New(cfg, nil)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, nil, fmt.Errorf("flux-node: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := n.Start(sctx); err != nil {
		_ = n.Shutdown(context.Background())
		os.RemoveAll(dir)
		return "", nil, nil, fmt.Errorf("flux-node: %w", err)
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
		os.RemoveAll(dir)
	}
	return n.ClientURL(), stop, n.ServiceOptions(), nil
}
