package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	guber "github.com/gubernator-io/gubernator/v2"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fluxlimiter/flux/bench/internal/keyseq"
)

// GubernatorDaemon is a one-node gubernator started in this process.
type GubernatorDaemon struct {
	// Addr is the gRPC address, host:port on loopback.
	Addr string
	d    *guber.Daemon
}

// StartGubernator starts gubernator v2 as a one-node daemon on free
// loopback ports (gRPC and its HTTP gateway), as gubernator's own cluster
// package does for its tests, with a cache large enough for cacheSize keys
// so that no key is evicted during a run. Its logs are discarded.
func StartGubernator(ctx context.Context, cacheSize int) (*GubernatorDaemon, error) {
	grpcAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	logger.SetLevel(logrus.ErrorLevel)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d, err := guber.SpawnDaemon(ctx, guber.DaemonConfig{
		GRPCListenAddress: grpcAddr,
		HTTPListenAddress: httpAddr,
		AdvertiseAddress:  grpcAddr,
		InstanceID:        grpcAddr,
		CacheSize:         cacheSize,
		Logger:            logrus.NewEntry(logger),
		// No PeerDiscoveryType: peers are set below, as the cluster
		// package does.
	})
	if err != nil {
		return nil, fmt.Errorf("load: start gubernator: %w", err)
	}
	addr := d.GRPCListeners[0].Addr().String()
	d.SetPeers([]guber.PeerInfo{{GRPCAddress: addr, HTTPAddress: d.HTTPListener.Addr().String()}})
	return &GubernatorDaemon{Addr: addr, d: d}, nil
}

// Close stops the daemon.
func (g *GubernatorDaemon) Close() { g.d.Close() }

// freeLoopbackAddr returns a 127.0.0.1 address whose port was free a
// moment ago. gubernator's daemon wants addresses, not listeners, and
// advertises the address it was given, so port 0 cannot be used directly.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// Gubernator drives a gubernator server over its gRPC client
// (GetRateLimits), with the same keys as a NATS run: a request of Batch
// rate limits, one per key.
type Gubernator struct {
	Addr string
	// Name is the rate limit name (gubernator's namespace for keys).
	Name string
	// Limit hits per Duration for every key.
	Limit    int64
	Duration time.Duration
	// Algorithm is TOKEN_BUCKET (the default) or LEAKY_BUCKET.
	Algorithm guber.Algorithm
	// Behavior is BATCHING (the default, 0) unless set. On a one-node
	// daemon every key is owned locally and batching only concerns
	// forwarding to other peers, so it makes no difference here.
	Behavior guber.Behavior
}

// Run sends cfg's load (closed loop only: cfg.Rate must be 0) from
// cfg.InFlight goroutines over cfg.Conns gRPC connections, each goroutine
// waiting for its reply before sending the next request.
func (g Gubernator) Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	if cfg.Rate > 0 {
		return nil, errors.New("load: open-loop runs are not implemented for gubernator")
	}
	// Dial as guber.DialV1Server does, minus its OpenTelemetry client
	// handler, so the client costs the shared CPU as little as possible.
	clients := make([]guber.V1Client, cfg.Conns)
	for i := range clients {
		conn, err := grpc.NewClient(g.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("load: dial gubernator: %w", err)
		}
		defer conn.Close()
		clients[i] = guber.NewV1Client(conn)
	}
	names := keyseq.Names(cfg.KeyPrefix, cfg.Keys)
	results := make([]Result, cfg.InFlight)
	base := time.Now()
	end := base.Add(cfg.Duration)
	var wg sync.WaitGroup
	for w := range cfg.InFlight {
		wg.Go(func() { g.worker(ctx, clients[w%len(clients)], cfg, names, end, &results[w]) })
	}
	wg.Wait()
	res := &Result{Name: cfg.Name, Batch: cfg.Batch, Elapsed: time.Since(base)}
	for i := range results {
		res.merge(&results[i])
	}
	return res, ctx.Err()
}

func (g Gubernator) worker(ctx context.Context, c guber.V1Client, cfg Config, names []string, end time.Time, res *Result) {
	seq := keyseq.NewSeq()
	req := &guber.GetRateLimitsReq{Requests: make([]*guber.RateLimitReq, cfg.Batch)}
	for i := range req.Requests {
		req.Requests[i] = &guber.RateLimitReq{
			Name:      g.Name,
			Hits:      1,
			Limit:     g.Limit,
			Duration:  g.Duration.Milliseconds(),
			Algorithm: g.Algorithm,
			Behavior:  g.Behavior,
		}
	}
	fail := func(n int, msg string) {
		res.Errors += uint64(n)
		if res.FirstError == "" {
			res.FirstError = msg
		}
	}
	for time.Now().Before(end) && ctx.Err() == nil {
		for _, r := range req.Requests {
			r.UniqueKey = names[seq.Next(len(names))]
		}
		rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		t0 := time.Now()
		resp, err := c.GetRateLimits(rctx, req)
		lat := time.Since(t0)
		cancel()
		if err != nil {
			fail(cfg.Batch, err.Error())
			continue
		}
		var ok int
		for _, r := range resp.Responses {
			switch {
			case r.Error != "":
				fail(1, r.Error)
			case r.Status == guber.Status_OVER_LIMIT:
				res.Denied++
				ok++
			default:
				ok++
			}
		}
		if len(resp.Responses) != cfg.Batch {
			fail(cfg.Batch-len(resp.Responses), fmt.Sprintf("%d responses for %d requests", len(resp.Responses), cfg.Batch))
		}
		if ok > 0 {
			res.Requests++
			res.Checks += uint64(ok)
			res.Latency.Record(lat)
		}
	}
}
