// Package nodetest starts flux-nodes in-process for tests of other
// packages: one helper instead of a copy per package. Nodes listen on
// random loopback ports with a temporary data dir and are shut down when
// the test ends.
//
// The node package's own tests cannot import it (an import cycle); they
// have the same helper in their package.
package nodetest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux/node"
)

// Config returns node.DefaultConfig on a random loopback NATS port, with
// a temporary data dir, the HTTP admin endpoints off, the node id
// "test" and the given limiters.
func Config(t testing.TB, limiters map[string]node.LimiterConfig) node.Config {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.NATSListen = "127.0.0.1:-1"
	cfg.HTTPListen = ""
	cfg.DataDir = t.TempDir()
	cfg.NodeID = "test"
	cfg.Limiters = limiters
	return cfg
}

// Start creates and starts a node with cfg and opts, failing the test if
// it cannot, and shuts it down when the test ends (reporting a failed
// shutdown).
func Start(t testing.TB, cfg node.Config, opts ...node.Option) *node.Node {
	t.Helper()
	n, err := node.New(cfg, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		_ = n.Shutdown(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return n
}

// Connect opens a NATS connection to n, closed when the test ends.
func Connect(t testing.TB, n *node.Node, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
