package node

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/protocol"
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

// zoneName is the name of a Timezone setting: "" is UTC.
func zoneName(tz string) string {
	if tz == "" {
		return "UTC"
	}
	return tz
}

// info describes a limiter's configuration for flux.v1.limiters: the
// parameters its algorithm takes, and nothing else.
func (e *limiterEntry) info() protocol.LimiterInfo {
	lc := e.cfg
	li := protocol.LimiterInfo{Name: e.name, Algorithm: lc.AlgorithmName(), Capacity: e.capacity}
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
	reply := protocol.LimitersReply{Limiters: []protocol.LimiterInfo{}}
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
	if mk, src := maxKeys(n.cfg); mk > 0 {
		opts = append(opts, flux.WithMaxKeys(mk))
		if n.cfg.MaxKeys == MaxKeysAuto {
			n.log.Info("max_keys derived from the memory available", "limiter", name, "max_keys", mk, "source", src)
		}
	}
	sopts, err := n.storeOptions(name, lc)
	if err != nil {
		return nil, err
	}
	opts = append(opts, sopts...)
	lim, err := flux.New(limit, opts...)
	if err != nil {
		return nil, fmt.Errorf("limiter %q: %w", name, err)
	}
	return &limiterEntry{name: name, cfg: lc, lim: lim, capacity: int64(limit.Capacity())}, nil
}

// handlerCount is how many workers answer each of check and check_batch
// (--handlers).
func handlerCount(cfg Config) int {
	if cfg.Handlers > 0 {
		return cfg.Handlers
	}
	return max(4, 2*runtime.GOMAXPROCS(0))
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
	}
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
