// Package metrics exports Flux's metrics to Prometheus (client_golang): the
// decisions, errors and check latency of each limiter, the state of its
// shards read at scrape time, cleanups, flux-node's request latency, and
// the store and cluster counters.
//
// Every series is labelled only by bounded values: limiter names, decision,
// error kind, shard index, endpoint, store operation. A client key is never
// a label. Label values that come from a caller are bounded defensively as
// well: after MaxLimiters distinct limiter names (and MaxEndpoints
// endpoints) further names are counted under OtherLabel, and error kinds,
// store operations, results and cluster paths outside their documented sets
// are counted as "other".
//
// The package registers its collectors on the prometheus.Registerer it is
// given, never on the default registry. A nil *Metrics is valid: all its
// methods do nothing, so callers need no "if m != nil" around them.
//
// flux-node and library users share the series names, so a dashboard built
// for one works for the other. Library users install the metrics as hooks:
//
//	m, err := metrics.New(reg)
//	lim, err := flux.New(limit, flux.WithHooks(m.Hooks("api")))
//	m.Track("api", lim)
package metrics

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxlimiter/flux"
)

// Bounds on label values taken from callers.
const (
	// MaxLimiters is how many distinct limiter names get their own series;
	// any further name is counted under OtherLabel.
	MaxLimiters = 1000
	// MaxEndpoints is the same bound for ObserveRequest's endpoints.
	MaxEndpoints = 64
	// OtherLabel stands for a label value beyond its bound.
	OtherLabel = "_other"
)

// ErrNilRegisterer is returned by New when given no Registerer.
var ErrNilRegisterer = errors.New("metrics: nil prometheus.Registerer")

// Error kinds recorded by Error and by the hooks. ErrorKind maps a Flux
// error to one of them; flux-node also uses its reply codes ("400", "404",
// "413", "503" and any other three-digit code).
const (
	KindClock      = "clock"      // flux.ErrClock
	KindOverloaded = "overloaded" // flux.ErrOverloaded
	KindFull       = "full"       // flux.ErrFull
	KindClosed     = "closed"     // flux.ErrClosed
	KindInvalid    = "invalid"    // invalid key, cost, limit, state or option
	KindPanic      = "panic"      // flux.ErrPanic
	KindCanceled   = "canceled"   // context.Canceled
	KindTimeout    = "timeout"    // context.DeadlineExceeded, or a peer or store that did not answer in time
	KindStore      = "store"      // a store failed
	KindCluster    = "cluster"    // the cluster bus failed
	KindOther      = "other"      // anything else
)

var kinds = set(KindClock, KindOverloaded, KindFull, KindClosed, KindInvalid, KindPanic,
	KindCanceled, KindTimeout, KindStore, KindCluster, KindOther)

// Store operations and results (Store, ObserveStore).
var (
	storeOps     = set("load", "save", "delete", "check")
	storeResults = set("ok", "miss", "error", "timeout", "conflict")
)

// Cluster answer paths (Answer) and gossip directions (Gossip).
var (
	answerPaths = set("local", "owner", "fallback")
	directions  = set("sent", "received")
)

func set(vs ...string) map[string]bool {
	m := make(map[string]bool, len(vs))
	for _, v := range vs {
		m[v] = true
	}
	return m
}

// Metrics holds Flux's metrics. Create it with New. It is safe for
// simultaneous use by multiple goroutines; a nil *Metrics does nothing.
type Metrics struct {
	decisions   *prometheus.CounterVec
	errs        *prometheus.CounterVec
	checkDur    *prometheus.HistogramVec
	requestDur  *prometheus.HistogramVec
	cleanRemove *prometheus.CounterVec
	cleanDur    *prometheus.HistogramVec
	storeOps    *prometheus.CounterVec
	storeDur    *prometheus.HistogramVec
	gossip      *prometheus.CounterVec
	members     *prometheus.GaugeVec
	answers     *prometheus.CounterVec
	mismatches  *prometheus.CounterVec
	refused     prometheus.Counter

	limiters  bounded // limiter names seen
	endpoints bounded

	series   sync.Map // limiter label -> *series (hot-path children)
	requests sync.Map // endpoint label -> prometheus.Observer

	mu      sync.Mutex
	tracked map[string]*flux.Limiter
}

// series are the pre-resolved children of one limiter's hot-path metrics,
// so recording a decision costs an atomic add, not a label lookup.
type series struct {
	allowed prometheus.Counter
	denied  prometheus.Counter
	check   prometheus.Observer
}

// New creates the metrics and registers them on reg. It fails if reg is nil
// or already holds metrics of the same names (one Metrics per registry).
func New(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, ErrNilRegisterer
	}
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_decisions_total",
			Help: "Checks decided, by limiter and decision (allowed or denied). Peeks count as decisions.",
		}, []string{"limiter", "decision"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_errors_total",
			Help: "Checks that failed with an error, by limiter and kind (an error kind or a flux-node reply code).",
		}, []string{"limiter", "kind"}),
		checkDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flux_check_duration_seconds",
			Help:    "Time a check took, as its caller saw it (for a batch item: the whole batch). Checks recorded by the library's metrics hooks are sampled (one in 8 by default): count totals with flux_decisions_total.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 11), // 1µs to 1s
		}, []string{"limiter"}),
		requestDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flux_request_duration_seconds",
			Help:    "Time flux-node took to answer a request, by endpoint.",
			Buckets: prometheus.ExponentialBuckets(1e-5, 4, 10), // 10µs to 2.6s
		}, []string{"endpoint"}),
		cleanRemove: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_cleanup_removed_total",
			Help: "Idle keys removed by explicit cleanups.",
		}, []string{"limiter"}),
		cleanDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flux_cleanup_duration_seconds",
			Help:    "Time an explicit cleanup took.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 4, 10), // 100µs to 26s
		}, []string{"limiter"}),
		storeOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_store_operations_total",
			Help: "Store operations (load, save, delete, check) by limiter and result (ok, miss, error, timeout, conflict).",
		}, []string{"limiter", "op", "result"}),
		storeDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flux_store_duration_seconds",
			Help:    "Time a store operation took.",
			Buckets: prometheus.ExponentialBuckets(5e-5, 4, 10), // 50µs to 13s
		}, []string{"limiter", "op"}),
		gossip: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_gossip_updates_total",
			Help: "Key updates gossiped to or from peers, by direction (sent or received).",
		}, []string{"direction"}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flux_cluster_members",
			Help: "Live cluster members this node counts, itself included.",
		}, nil),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_cluster_answers_total",
			Help: "Where each clustered decision came from: local, owner or fallback.",
		}, []string{"limiter", "path"}),
		mismatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_cluster_config_mismatches_total",
			Help: "Heartbeats from peers whose limiter configuration differs from this node's.",
		}, nil),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flux_node_replies_refused_total",
			Help: "Requests flux-node dropped unanswered because their reply subject is not an allowed inbox (reply_prefixes).",
		}),
		limiters:  bounded{max: MaxLimiters},
		endpoints: bounded{max: MaxEndpoints},
		tracked:   make(map[string]*flux.Limiter),
	}
	cs := []prometheus.Collector{
		m.decisions, m.errs, m.checkDur, m.requestDur, m.cleanRemove, m.cleanDur,
		m.storeOps, m.storeDur, m.gossip, m.members, m.answers, m.mismatches,
		m.refused, (*shardCollector)(m),
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, r := range cs[:i] {
				reg.Unregister(r)
			}
			return nil, err
		}
	}
	return m, nil
}

// bounded admits up to max distinct label values; others become
// OtherLabel. Values are made valid UTF-8 and cut to MaxLabelLen bytes, so
// no caller-chosen value can make client_golang panic or bloat a series.
type bounded struct {
	seen sync.Map // raw value -> label
	mu   sync.Mutex
	n    int
	max  int
}

// MaxLabelLen is the longest label value kept from a caller; longer ones
// are cut.
const MaxLabelLen = 128

func (b *bounded) label(v string) string {
	if lb, ok := b.seen.Load(v); ok {
		return lb.(string)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if lb, ok := b.seen.Load(v); ok {
		return lb.(string)
	}
	if b.n >= b.max {
		return OtherLabel
	}
	lb := v
	if len(lb) > MaxLabelLen {
		lb = lb[:MaxLabelLen]
	}
	lb = strings.ToValidUTF8(lb, "\uFFFD")
	b.n++
	b.seen.Store(v, lb)
	return lb
}

// get returns the hot-path series of a limiter.
func (m *Metrics) get(limiter string) *series {
	if s, ok := m.series.Load(limiter); ok {
		return s.(*series)
	}
	lb := m.limiters.label(limiter)
	if s, ok := m.series.Load(lb); ok {
		return s.(*series)
	}
	s := &series{
		allowed: m.decisions.WithLabelValues(lb, "allowed"),
		denied:  m.decisions.WithLabelValues(lb, "denied"),
		check:   m.checkDur.WithLabelValues(lb),
	}
	v, _ := m.series.LoadOrStore(lb, s)
	return v.(*series)
}

// Decision counts one decision of limiter in flux_decisions_total. Use it
// or the hooks (Hooks) for a limiter, not both, or decisions count twice.
func (m *Metrics) Decision(limiter string, allowed bool) {
	if m == nil {
		return
	}
	s := m.get(limiter)
	if allowed {
		s.allowed.Inc()
	} else {
		s.denied.Inc()
	}
}

// Decisions counts n decisions at once (for a batch).
func (m *Metrics) Decisions(limiter string, allowed, denied int) {
	if m == nil {
		return
	}
	s := m.get(limiter)
	if allowed > 0 {
		s.allowed.Add(float64(allowed))
	}
	if denied > 0 {
		s.denied.Add(float64(denied))
	}
}

// Error counts one failed check of limiter in flux_errors_total. kind is
// one of the Kind constants or a three-digit reply code such as "404";
// anything else is counted as KindOther. For a request naming no known
// limiter (a 404), pass limiter "" rather than the requested name, which
// is caller-chosen.
func (m *Metrics) Error(limiter, kind string) {
	if m == nil {
		return
	}
	if !kinds[kind] && !isCode(kind) {
		kind = KindOther
	}
	m.errs.WithLabelValues(m.limiters.label(limiter), kind).Inc()
}

// isCode reports whether s is a three-digit status code.
func isCode(s string) bool {
	return len(s) == 3 && s[0] >= '1' && s[0] <= '5' &&
		s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9'
}

// ErrorKind maps an error returned by a Limiter (or the client) to its
// kind for Error: KindClock, KindOverloaded, KindFull, KindClosed,
// KindInvalid, KindPanic, KindCanceled, KindTimeout or KindOther.
func ErrorKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, flux.ErrClock):
		return KindClock
	case errors.Is(err, flux.ErrOverloaded):
		return KindOverloaded
	case errors.Is(err, flux.ErrFull):
		return KindFull
	case errors.Is(err, flux.ErrClosed):
		return KindClosed
	case errors.Is(err, flux.ErrPanic):
		return KindPanic
	case errors.Is(err, context.Canceled):
		return KindCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	case errors.Is(err, flux.ErrInvalidCost), errors.Is(err, flux.ErrCostExceedsBurst),
		errors.Is(err, flux.ErrEmptyKey), errors.Is(err, flux.ErrKeyTooLong),
		errors.Is(err, flux.ErrInvalidRate), errors.Is(err, flux.ErrInvalidBurst),
		errors.Is(err, flux.ErrInvalidState), errors.Is(err, flux.ErrInvalidOption):
		return KindInvalid
	}
	return KindOther
}

// ObserveCheck records the latency of one check of limiter in
// flux_check_duration_seconds.
func (m *Metrics) ObserveCheck(limiter string, d time.Duration) {
	if m == nil {
		return
	}
	m.get(limiter).check.Observe(d.Seconds())
}

// ObserveRequest records how long flux-node took to answer one request on
// endpoint (such as "check", "check_batch", "limiters") in
// flux_request_duration_seconds.
func (m *Metrics) ObserveRequest(endpoint string, d time.Duration) {
	if m == nil {
		return
	}
	m.requestObserver(endpoint).Observe(d.Seconds())
}

// requestObserver returns the flux_request_duration_seconds child of an
// endpoint, resolved once: after the first request of an endpoint,
// observing costs a map load and an atomic add, not a label lookup. As in
// get, the cache is keyed by label, so it holds at most MaxEndpoints+1
// children whatever endpoints callers pass.
func (m *Metrics) requestObserver(endpoint string) prometheus.Observer {
	if o, ok := m.requests.Load(endpoint); ok {
		return o.(prometheus.Observer)
	}
	lb := m.endpoints.label(endpoint)
	if o, ok := m.requests.Load(lb); ok {
		return o.(prometheus.Observer)
	}
	o, _ := m.requests.LoadOrStore(lb, m.requestDur.WithLabelValues(lb))
	return o.(prometheus.Observer)
}

// Cleanup records an explicit cleanup of limiter that removed removed keys
// in d (the original notes' record_cleanup): flux_cleanup_removed_total and
// flux_cleanup_duration_seconds. The background sweep is counted apart, in
// flux_swept_keys_total (see Track).
func (m *Metrics) Cleanup(limiter string, removed int, d time.Duration) {
	if m == nil {
		return
	}
	lb := m.limiters.label(limiter)
	if removed > 0 {
		m.cleanRemove.WithLabelValues(lb).Add(float64(removed))
	} else {
		m.cleanRemove.WithLabelValues(lb) // the series exists from the first cleanup on
	}
	m.cleanDur.WithLabelValues(lb).Observe(d.Seconds())
}

// DefaultLatencySample is how many checks the metrics hooks time one of by
// default (see flux.Hooks.LatencySample): timing every check would cost
// about 45 ns more per check than the rest of the hooks together.
const DefaultLatencySample = 8

// HookOption configures the hooks returned by Metrics.Hooks.
type HookOption func(*hookConfig)

type hookConfig struct{ sample int }

// WithLatencySample sets how many checks the hooks time one of, picked at
// random (default DefaultLatencySample; 1 times every check).
func WithLatencySample(n int) HookOption {
	return func(c *hookConfig) { c.sample = max(n, 1) }
}

// Hooks returns hooks that record every check of a limiter named limiter:
// flux_decisions_total and, for failed checks, flux_errors_total with the
// kind ErrorKind gives, exactly; and flux_check_duration_seconds for a
// random sample of checks (one in DefaultLatencySample unless
// WithLatencySample says otherwise), which keeps the latency
// distribution and mean while the cost per check stays in tens of
// nanoseconds. Install them with flux.WithHooks.
func (m *Metrics) Hooks(limiter string, opts ...HookOption) flux.Hooks {
	if m == nil {
		return flux.Hooks{}
	}
	cfg := hookConfig{sample: DefaultLatencySample}
	for _, o := range opts {
		o(&cfg)
	}
	s := m.get(limiter)
	lb := m.limiters.label(limiter)
	return flux.Hooks{
		AfterCheck: func(_ context.Context, _ string, _ int, d flux.Decision, lat time.Duration) {
			if d.Allowed {
				s.allowed.Inc()
			} else {
				s.denied.Inc()
			}
			if lat > 0 {
				s.check.Observe(lat.Seconds())
			}
		},
		OnError: func(_ context.Context, _ string, _ int, err error, lat time.Duration) {
			m.errs.WithLabelValues(lb, ErrorKind(err)).Inc()
			if lat > 0 {
				s.check.Observe(lat.Seconds())
			}
		},
		LatencySample: cfg.sample,
	}
}

// Store counts one store operation of limiter in
// flux_store_operations_total. op is "load", "save", "delete" or "check"
// (an atomic check inside the store); result is "ok", "miss", "error",
// "timeout" or "conflict". Other values are counted as "other".
func (m *Metrics) Store(limiter, op, result string) {
	if m == nil {
		return
	}
	if !storeOps[op] {
		op = KindOther
	}
	if !storeResults[result] {
		result = KindOther
	}
	m.storeOps.WithLabelValues(m.limiters.label(limiter), op, result).Inc()
}

// ObserveStore records how long a store operation of limiter took in
// flux_store_duration_seconds (op as for Store).
func (m *Metrics) ObserveStore(limiter, op string, d time.Duration) {
	if m == nil {
		return
	}
	if !storeOps[op] {
		op = KindOther
	}
	m.storeDur.WithLabelValues(m.limiters.label(limiter), op).Observe(d.Seconds())
}

// Gossip counts n key updates sent to peers (direction "sent") or applied
// from them ("received") in flux_gossip_updates_total.
func (m *Metrics) Gossip(direction string, n int) {
	if m == nil || n <= 0 {
		return
	}
	if !directions[direction] {
		direction = KindOther
	}
	m.gossip.WithLabelValues(direction).Add(float64(n))
}

// ClusterMembers sets flux_cluster_members, the live members this node
// counts, itself included.
func (m *Metrics) ClusterMembers(n int) {
	if m == nil {
		return
	}
	m.members.WithLabelValues().Set(float64(n))
}

// Answer counts where a clustered decision of limiter came from, path
// "local", "owner" or "fallback", in flux_cluster_answers_total.
func (m *Metrics) Answer(limiter, path string) {
	if m == nil {
		return
	}
	if !answerPaths[path] {
		path = KindOther
	}
	m.answers.WithLabelValues(m.limiters.label(limiter), path).Inc()
}

// ReplyRefused counts a request flux-node dropped because its reply
// subject is not one it may publish on, in
// flux_node_replies_refused_total.
func (m *Metrics) ReplyRefused() {
	if m == nil {
		return
	}
	m.refused.Inc()
}

// ConfigMismatch counts a heartbeat from a peer whose limiter
// configuration fingerprint differs from this node's.
func (m *Metrics) ConfigMismatch() {
	if m == nil {
		return
	}
	m.mismatches.WithLabelValues().Inc()
}

// Track exports the shard statistics of l under the name limiter, read at
// scrape time from l.ShardStats(): flux_shard_mailbox_depth{limiter,shard},
// flux_keys{limiter}, and the counters flux_evictions_total,
// flux_swept_keys_total, flux_refused_keys_total, flux_panics_total and
// flux_clock_errors_total{limiter}; and from l.StoreStats() the store
// counters flux_store_loads_total, flux_store_load_errors_total,
// flux_store_saves_total, flux_store_save_errors_total,
// flux_store_fallbacks_total, flux_store_foreign_states_total and the
// gauge flux_store_dirty_keys{limiter}
// (store.go). Tracking a name again replaces its limiter (as flux-node
// does on reload); a nil l untracks it.
func (m *Metrics) Track(limiter string, l *flux.Limiter) {
	if m == nil {
		return
	}
	if l == nil {
		m.Untrack(limiter)
		return
	}
	lb := m.limiters.label(limiter)
	if lb == OtherLabel {
		return // beyond the bound: tracking could not tell them apart
	}
	m.mu.Lock()
	m.tracked[lb] = l
	m.mu.Unlock()
}

// Untrack stops exporting the shard statistics of limiter. The counters
// recorded for it (decisions, errors...) stay.
func (m *Metrics) Untrack(limiter string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.tracked, limiter)
	m.mu.Unlock()
}

// shardCollector collects the tracked limiters' shard statistics.
type shardCollector Metrics

var (
	descMailbox = prometheus.NewDesc("flux_shard_mailbox_depth",
		"Messages waiting in a shard's mailbox.", []string{"limiter", "shard"}, nil)
	descKeys = prometheus.NewDesc("flux_keys",
		"Keys held by a limiter.", []string{"limiter"}, nil)
	descEvictions = prometheus.NewDesc("flux_evictions_total",
		"Idle keys evicted to make room under the key bound.", []string{"limiter"}, nil)
	descSwept = prometheus.NewDesc("flux_swept_keys_total",
		"Idle keys removed by the background sweep.", []string{"limiter"}, nil)
	descRefused = prometheus.NewDesc("flux_refused_keys_total",
		"New keys refused because their shard was full (flux.ErrFull).", []string{"limiter"}, nil)
	descPanics = prometheus.NewDesc("flux_panics_total",
		"Panics contained inside shards.", []string{"limiter"}, nil)
	descClockErrs = prometheus.NewDesc("flux_clock_errors_total",
		"Clock failures seen by shards.", []string{"limiter"}, nil)
)

// Describe implements prometheus.Collector.
func (c *shardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMailbox, descKeys, descEvictions, descSwept, descRefused, descPanics, descClockErrs} {
		ch <- d
	}
	for _, d := range storeDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *shardCollector) Collect(ch chan<- prometheus.Metric) {
	type entry struct {
		name string
		l    *flux.Limiter
	}
	c.mu.Lock()
	ls := make([]entry, 0, len(c.tracked))
	for name, l := range c.tracked {
		ls = append(ls, entry{name, l})
	}
	c.mu.Unlock()
	for _, e := range ls {
		var keys int
		var evicted, swept, refused, panics, clockErrs uint64
		for i, st := range e.l.ShardStats() {
			ch <- prometheus.MustNewConstMetric(descMailbox, prometheus.GaugeValue, float64(st.Mailbox), e.name, strconv.Itoa(i))
			keys += st.Keys
			evicted += st.Evicted
			swept += st.Swept
			refused += st.Refused
			panics += st.Panics
			clockErrs += st.ClockErrs
		}
		ch <- prometheus.MustNewConstMetric(descKeys, prometheus.GaugeValue, float64(keys), e.name)
		ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(evicted), e.name)
		ch <- prometheus.MustNewConstMetric(descSwept, prometheus.CounterValue, float64(swept), e.name)
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(refused), e.name)
		ch <- prometheus.MustNewConstMetric(descPanics, prometheus.CounterValue, float64(panics), e.name)
		ch <- prometheus.MustNewConstMetric(descClockErrs, prometheus.CounterValue, float64(clockErrs), e.name)
		collectStore(ch, e.name, e.l) // store.go
	}
}
