package node

import (
	"context"
	"encoding/json"
	"errors"
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

// handlerCount is how many lane subscriptions and workers serve each of
// check and check_batch.
func handlerCount(cfg Config) int {
	if cfg.Handlers > 0 {
		return cfg.Handlers
	}
	return max(4, 2*runtime.GOMAXPROCS(0))
}

// startService registers the micro service and its endpoints, and starts
// the lanes (lanes.go) that answer most requests in parallel.
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
	g := svc.AddGroup(Group)
	if err := g.AddEndpoint("check", micro.HandlerFunc(newHandler(n).serveCheck)); err != nil {
		return fmt.Errorf("flux-node: add endpoint check: %w", err)
	}
	if err := g.AddEndpoint("check_batch", micro.HandlerFunc(newHandler(n).serveBatch)); err != nil {
		return fmt.Errorf("flux-node: add endpoint check_batch: %w", err)
	}
	if err := g.AddEndpoint("limiters", micro.HandlerFunc(n.serveLimiters)); err != nil {
		return fmt.Errorf("flux-node: add endpoint limiters: %w", err)
	}
	if !n.microOnly {
		if err := n.startLanes(cfg); err != nil {
			return err
		}
	}
	// A round trip makes sure the server has every subscription before
	// Start returns, so the first request finds responders.
	if err := n.nc.FlushTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("flux-node: register service: %w", err)
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
		for _, sh := range e.lim.Stats() {
			s.Mailbox += sh.Mailbox
		}
		out[name] = s
	}
	return map[string]any{
		"node_id":  n.cfg.NodeID,
		"limiters": out,
		// Requests answered by the lanes, which micro does not count.
		"lane_requests": n.lanes.requests.Load(),
		"lane_errors":   n.lanes.errors.Load(),
	}
}

// serveLimiters answers flux.v1.limiters.
func (n *Node) serveLimiters(req micro.Request) {
	start := time.Now()
	if err := req.Respond(n.limiters.Load().info); err != nil {
		n.log.Debug("respond", "error", err)
	}
	n.met.ObserveRequest("limiters", time.Since(start))
}

// respondError sends an error reply: micro's error headers plus a JSON
// body {"error":{...}}.
func (n *Node) respondError(req micro.Request, e wire.ErrorBody, buf []byte) []byte {
	buf = wire.AppendErrorReply(buf[:0], e)
	if err := req.Error(strconv.Itoa(e.Code), headerSafe(e.Description), buf); err != nil {
		n.log.Debug("respond", "error", err)
	}
	return buf
}

// errorFor maps a limiter error to its reply.
func errorFor(err error) wire.ErrorBody {
	code, reason := wire.CodeInternal, wire.ReasonInternal
	switch {
	case errors.Is(err, flux.ErrEmptyKey):
		code, reason = wire.CodeBadRequest, wire.ReasonEmptyKey
	case errors.Is(err, flux.ErrKeyTooLong):
		code, reason = wire.CodeBadRequest, wire.ReasonKeyTooLong
	case errors.Is(err, flux.ErrInvalidCost):
		code, reason = wire.CodeBadRequest, wire.ReasonInvalidCost
	case errors.Is(err, flux.ErrCostExceedsCapacity):
		code, reason = wire.CodeBadRequest, wire.ReasonCostExceedsCapacity
	case errors.Is(err, flux.ErrOverloaded), errors.Is(err, flux.ErrFull):
		code, reason = wire.CodeUnavailable, wire.ReasonOverloaded
	case errors.Is(err, flux.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code, reason = wire.CodeUnavailable, wire.ReasonShuttingDown
	}
	return wire.ErrorBody{Code: code, Reason: reason, Description: err.Error()}
}

// quoteName quotes a caller-chosen name for an error description, cut to
// 64 bytes.
func quoteName(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
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
