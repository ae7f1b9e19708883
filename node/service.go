package node

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/internal/wire"
)

// limiterEntry is one configured limiter. Entries are immutable: a reload
// that changes a limit publishes a new entry for the same *flux.Limiter.
type limiterEntry struct {
	name     string
	cfg      LimiterConfig
	lim      *flux.Limiter
	capacity int64
}

// limiterSet is the limiters in force, swapped whole on reload so request
// handlers read it without locks.
type limiterSet struct {
	byName map[string]*limiterEntry
	info   []byte // the reply of flux.v1.limiters
}

func (s *limiterSet) closeAll() {
	for _, e := range s.byName {
		e.lim.Close()
	}
}

// limiterInfo is one limiter in the flux.v1.limiters reply.
type limiterInfo struct {
	Name      string   `json:"name"`
	Algorithm string   `json:"algorithm"`
	Rate      *float64 `json:"rate,omitempty"`
	Burst     *float64 `json:"burst,omitempty"`
	Limit     int      `json:"limit,omitempty"`
	Window    string   `json:"window,omitempty"`
	WindowNS  int64    `json:"window_ns,omitempty"`
	Calendar  string   `json:"calendar,omitempty"`
	Timezone  string   `json:"timezone,omitempty"`
	Capacity  int64    `json:"capacity"`
}

// zoneName is the name of a Timezone setting: "" is UTC.
func zoneName(tz string) string {
	if tz == "" {
		return "UTC"
	}
	return tz
}

// info describes a limiter's configuration for flux.v1.limiters: the
// parameters its algorithm takes, and nothing else.
func (e *limiterEntry) info() limiterInfo {
	lc := e.cfg
	li := limiterInfo{Name: e.name, Algorithm: lc.AlgorithmName(), Capacity: e.capacity}
	if !flux.Algorithm(li.Algorithm).Windowed() {
		rate, burst := lc.Rate, lc.Burst
		li.Rate, li.Burst = &rate, &burst
		return li
	}
	li.Limit = lc.Limit
	if lc.Calendar != "" {
		li.Calendar, li.Timezone = lc.Calendar, zoneName(lc.Timezone)
	} else {
		li.Window, li.WindowNS = lc.Window.String(), int64(lc.Window)
	}
	return li
}

func (s *limiterSet) encodeInfo() {
	var reply struct {
		Limiters []limiterInfo `json:"limiters"`
	}
	reply.Limiters = []limiterInfo{}
	for _, name := range slices.Sorted(maps.Keys(s.byName)) {
		reply.Limiters = append(reply.Limiters, s.byName[name].info())
	}
	s.info, _ = json.Marshal(reply)
}

// newEntry creates the limiter of one configured name.
func (n *Node) newEntry(name string, lc LimiterConfig) (*limiterEntry, error) {
	limit, err := lc.FluxLimit()
	if err != nil {
		return nil, fmt.Errorf("%w: limiter %q: %w", ErrInvalidConfig, name, err)
	}
	opts := []flux.Option{
		flux.WithMaxKeyLen(n.maxKeyLen),
		flux.WithOverloadWait(time.Duration(n.cfg.OverloadWait)),
		flux.WithLogger(n.log.With("limiter", name)),
	}
	if n.cfg.Shards > 0 {
		opts = append(opts, flux.WithShards(n.cfg.Shards))
	}
	if n.cfg.MaxKeys > 0 {
		opts = append(opts, flux.WithMaxKeys(n.cfg.MaxKeys))
	}
	opts = append(opts, n.storeOptions(name, lc)...)
	lim, err := flux.New(limit, opts...)
	if err != nil {
		return nil, fmt.Errorf("limiter %q: %w", name, err)
	}
	return &limiterEntry{name: name, cfg: lc, lim: lim, capacity: int64(limit.Capacity())}, nil
}

// handlerCount is how many batches the coalescer decides at once
// (--handlers).
func handlerCount(cfg Config) int {
	if cfg.Handlers > 0 {
		return cfg.Handlers
	}
	return max(4, 2*runtime.GOMAXPROCS(0))
}

// endpointsPer is how many micro endpoints serve each of check and
// check_batch per batch decided at once: an endpoint delivers one request
// at a time, so more endpoints than batches keep requests waiting in the
// coalescer, ready to be decided together.
const endpointsPer = 4

// maxCoalesce bounds the items a batch of coalesced requests holds (a
// single request beyond it is still decided, alone).
const maxCoalesce = 512

// startService registers the micro service: for each of check and
// check_batch, several endpoints on the subject (one door: the same queue
// group, the same handler type, the same pipeline), and the limiters
// endpoint.
func (n *Node) startService(cfg Config) error {
	svc, err := micro.AddService(n.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "Flux rate limiter: checks over NATS request-reply (docs/PROTOCOL.md)",
		Metadata:    map[string]string{"node_id": cfg.NodeID, "protocol": Group},
		StatsHandler: func(*micro.Endpoint) any {
			return n.stats()
		},
		ErrorHandler: func(_ micro.Service, err *micro.NATSError) {
			n.log.Warn("service error", "subject", err.Subject, "error", err.Description)
		},
	})
	if err != nil {
		return fmt.Errorf("flux-node: register service: %w", err)
	}
	n.svc = svc
	before := n.nc.NumSubscriptions()
	g := svc.AddGroup(Group)
	for _, k := range []kind{kindCheck, kindBatch} {
		for i := range handlerCount(cfg) * endpointsPer {
			name := k.endpoint()
			if i > 0 {
				name += "-" + strconv.Itoa(i+1)
			}
			if err := g.AddEndpoint(name, newHandler(n, k), micro.WithEndpointSubject(k.endpoint())); err != nil {
				return fmt.Errorf("flux-node: add endpoint %s: %w", name, err)
			}
		}
	}
	if err := g.AddEndpoint("limiters", micro.HandlerFunc(n.serveLimiters)); err != nil {
		return fmt.Errorf("flux-node: add endpoint limiters: %w", err)
	}
	n.svcSubs = n.nc.NumSubscriptions() - before
	// A round trip makes sure the server has every subscription before
	// Start returns, so the first request finds responders.
	if err := n.nc.FlushTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("flux-node: register service: %w", err)
	}
	return nil
}

// stopService stops the service's endpoints taking requests and waits,
// until ctx ends, for their subscriptions to drain: every request NATS
// routed to them is answered. n.mu is held.
func (n *Node) stopService(ctx context.Context) error {
	if n.svc == nil {
		return nil
	}
	target := n.nc.NumSubscriptions() - n.svcSubs
	if err := n.svc.Stop(); err != nil {
		return fmt.Errorf("stop service: %w", err)
	}
	// A drained subscription leaves the connection's set: the service's
	// are drained once only the others remain.
	for n.nc.NumSubscriptions() > target && !n.nc.IsClosed() && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// stats is the service's custom $SRV.STATS data: per limiter, keys held
// and messages waiting in shard mailboxes.
func (n *Node) stats() any {
	type st struct {
		Keys    int `json:"keys"`
		Mailbox int `json:"mailbox"`
	}
	out := map[string]st{}
	for name, e := range n.limiters.Load().byName {
		s := st{Keys: e.lim.Len()}
		for _, sh := range e.lim.ShardStats() {
			s.Mailbox += sh.Mailbox
		}
		out[name] = s
	}
	return map[string]any{
		"node_id":  n.cfg.NodeID,
		"limiters": out,
	}
}

// serveLimiters answers flux.v1.limiters.
func (n *Node) serveLimiters(req micro.Request) {
	start := time.Now()
	n.reply(req, nil, n.limiters.Load().info, wire.ErrorBody{})
	n.met.ObserveRequest("limiters", time.Since(start))
}

// adminHandler serves /healthz, /readyz and /metrics.
func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := n.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.gatherer(), promhttp.HandlerOpts{Registry: n.reg}))
	return mux
}
