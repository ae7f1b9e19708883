package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/internal/fluxtest"
	"github.com/fluxlimiter/flux/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newMetrics(t *testing.T) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// newLimiter is a two-shard limiter on a manual clock, closed with the
// test.
func newLimiter(t testing.TB, lim flux.Limit, opts ...flux.Option) *flux.Limiter {
	t.Helper()
	l, _ := fluxtest.New(t, lim, append([]flux.Option{flux.WithShards(2)}, opts...)...)
	return l
}

// series counts the series of every family in reg.
func series(t *testing.T, reg prometheus.Gatherer) map[string]int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, mf := range mfs {
		out[mf.GetName()] = len(mf.GetMetric())
	}
	return out
}

func histCount(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			return m.GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func TestNewRejectsNilAndDuplicate(t *testing.T) {
	if _, err := metrics.New(nil); !errors.Is(err, metrics.ErrNilRegisterer) {
		t.Fatalf("New(nil) = %v", err)
	}
	reg := prometheus.NewRegistry()
	if _, err := metrics.New(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.New(reg); err == nil {
		t.Fatal("second New on one registry succeeded")
	}
	// The failed New left the first one's metrics in place and nothing of
	// its own: a third attempt fails the same way, not with a partial state.
	if _, err := metrics.New(reg); err == nil {
		t.Fatal("third New succeeded")
	}
}

func TestHooksExactCounts(t *testing.T) {
	m, reg := newMetrics(t)
	l := newLimiter(t, flux.Limit{Rate: 1, Burst: 2}, flux.WithHooks(m.Hooks("api", metrics.WithLatencySample(1))))
	ctx := t.Context()
	for range 5 { // capacity 3: 3 allowed, 2 denied
		if _, err := l.Check(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.CheckN(ctx, "alice", 10); !errors.Is(err, flux.ErrCostExceedsCapacity) {
		t.Fatal(err)
	}
	out := make([]flux.Decision, 2)
	if err := l.CheckBatch(ctx, []flux.Request{{Key: "bob", Cost: 1}, {Key: "alice", Cost: 1}}, out); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP flux_decisions_total Checks decided, by limiter and decision (allowed or denied). Peeks count as decisions.
# TYPE flux_decisions_total counter
flux_decisions_total{decision="allowed",limiter="api"} 4
flux_decisions_total{decision="denied",limiter="api"} 3
# HELP flux_errors_total Checks that failed with an error, by limiter and kind (an error kind or a flux-node reply code).
# TYPE flux_errors_total counter
flux_errors_total{kind="invalid",limiter="api"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "flux_decisions_total", "flux_errors_total"); err != nil {
		t.Fatal(err)
	}
	if n := histCount(t, reg, "flux_check_duration_seconds", map[string]string{"limiter": "api"}); n != 8 {
		t.Fatalf("check duration count = %d, want 8", n)
	}
}

// By default about one check in DefaultLatencySample is timed; decisions
// are still counted exactly.
func TestLatencySampling(t *testing.T) {
	m, reg := newMetrics(t)
	l := newLimiter(t, flux.Limit{Rate: 1, Burst: 1e6}, flux.WithHooks(m.Hooks("api")))
	const n = 4000
	for i := range n {
		if _, err := l.Check(t.Context(), "k"+strconv.Itoa(i%10)); err != nil {
			t.Fatal(err)
		}
	}
	if c := testutil.ToFloat64(decisionCounter(t, reg, "api", "allowed")); c != n {
		t.Fatalf("allowed = %v, want %d", c, n)
	}
	// Binomial(4000, 1/8): mean 500, standard deviation 21.
	if got := histCount(t, reg, "flux_check_duration_seconds", map[string]string{"limiter": "api"}); got < 350 || got > 650 {
		t.Fatalf("%d checks timed of %d, want about %d", got, n, n/metrics.DefaultLatencySample)
	}
}

func TestFloodOfKeysAddsNoSeries(t *testing.T) {
	m, reg := newMetrics(t)
	l := newLimiter(t, flux.Limit{Rate: 1}, flux.WithHooks(m.Hooks("api")))
	m.Track("api", l)
	ctx := t.Context()
	for i := range 10 {
		if _, err := l.Check(ctx, "warmup-"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = l.CheckN(ctx, "x", 99) // an error series too
	before := series(t, reg)
	for i := range 20_000 {
		key := fmt.Sprintf("attacker-%d-\xff\"}", i) // hostile bytes too
		if _, err := l.Check(ctx, key); err != nil {
			t.Fatal(err)
		}
		_, _ = l.CheckN(ctx, key, 99)
	}
	after := series(t, reg)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("series changed:\n before %v\n after  %v", before, after)
	}
	if got := testutil.ToFloat64(gaugeOf(t, reg, "flux_keys")); got != 20_010 {
		t.Fatalf("flux_keys = %v, want 20010", got)
	}
}

// gaugeOf wraps a gathered family's single value as a Collector for
// testutil.ToFloat64.
func gaugeOf(t *testing.T, reg prometheus.Gatherer, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
			g.Set(mf.GetMetric()[0].GetGauge().GetValue())
			return g
		}
	}
	t.Fatalf("no single series %s", name)
	return nil
}

func TestLimiterNamesAreBounded(t *testing.T) {
	m, reg := newMetrics(t)
	for i := range metrics.MaxLimiters + 500 {
		name := "tenant-" + strconv.Itoa(i)
		m.Decision(name, true)
		m.Error(name, "404")
	}
	m.Decision("\xff\xfe", false)                  // invalid UTF-8 must not panic
	m.Decision(strings.Repeat("x", 10_000), false) // nor a huge name
	s := series(t, reg)
	// MaxLimiters names plus OtherLabel, each with its allowed and denied
	// series.
	if s["flux_decisions_total"] != 2*(metrics.MaxLimiters+1) {
		t.Fatalf("decision series = %d", s["flux_decisions_total"])
	}
	if s["flux_errors_total"] != metrics.MaxLimiters+1 {
		t.Fatalf("error series = %d", s["flux_errors_total"])
	}
	c := testutil.ToFloat64(decisionCounter(t, reg, metrics.OtherLabel, "allowed"))
	if c != 500 {
		t.Fatalf("%s allowed = %v, want 500", metrics.OtherLabel, c)
	}
}

func decisionCounter(t *testing.T, reg prometheus.Gatherer, limiter, decision string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "flux_decisions_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			if label(mt, "limiter") == limiter && label(mt, "decision") == decision {
				c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
				c.Add(mt.GetCounter().GetValue())
				return c
			}
		}
	}
	t.Fatalf("no series %s/%s", limiter, decision)
	return nil
}

func label(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

func TestNodeFacingMethods(t *testing.T) {
	m, reg := newMetrics(t)
	m.Decision("api", true)
	m.Decision("api", false)
	m.Decisions("api", 5, 2)
	m.Error("api", "503")
	m.Error("", "404")
	m.Error("api", "nonsense kind")
	m.Error("api", metrics.ErrorKind(fmt.Errorf("x: %w", flux.ErrOverloaded)))
	m.ObserveCheck("api", 3*time.Microsecond)
	m.ObserveRequest("check", 40*time.Microsecond)
	m.ObserveRequest("check_batch", time.Millisecond)
	m.Cleanup("api", 7, 2*time.Millisecond)
	m.Cleanup("api", 0, time.Millisecond)
	m.Store("api", "save", "ok")
	m.Store("api", "save", "weird")
	m.ObserveStore("api", "load", time.Millisecond)
	m.Gossip("sent", 10)
	m.Gossip("received", 3)
	m.ClusterMembers(3)
	m.Answer("api", "owner")
	m.Answer("api", "elsewhere")
	m.ConfigMismatch()
	want := `
# HELP flux_decisions_total Checks decided, by limiter and decision (allowed or denied). Peeks count as decisions.
# TYPE flux_decisions_total counter
flux_decisions_total{decision="allowed",limiter="api"} 6
flux_decisions_total{decision="denied",limiter="api"} 3
# HELP flux_errors_total Checks that failed with an error, by limiter and kind (an error kind or a flux-node reply code).
# TYPE flux_errors_total counter
flux_errors_total{kind="404",limiter=""} 1
flux_errors_total{kind="503",limiter="api"} 1
flux_errors_total{kind="other",limiter="api"} 1
flux_errors_total{kind="overloaded",limiter="api"} 1
# HELP flux_cleanup_removed_total Idle keys removed by explicit cleanups.
# TYPE flux_cleanup_removed_total counter
flux_cleanup_removed_total{limiter="api"} 7
# HELP flux_store_operations_total Store operations (load, save, delete, check) by limiter and result (ok, miss, error, timeout, conflict).
# TYPE flux_store_operations_total counter
flux_store_operations_total{limiter="api",op="save",result="ok"} 1
flux_store_operations_total{limiter="api",op="save",result="other"} 1
# HELP flux_gossip_updates_total Key updates gossiped to or from peers, by direction (sent or received).
# TYPE flux_gossip_updates_total counter
flux_gossip_updates_total{direction="received"} 3
flux_gossip_updates_total{direction="sent"} 10
# HELP flux_cluster_members Live cluster members this node counts, itself included.
# TYPE flux_cluster_members gauge
flux_cluster_members 3
# HELP flux_cluster_answers_total Where each clustered decision came from: local, owner or fallback.
# TYPE flux_cluster_answers_total counter
flux_cluster_answers_total{limiter="api",path="other"} 1
flux_cluster_answers_total{limiter="api",path="owner"} 1
# HELP flux_cluster_config_mismatches_total Heartbeats from peers whose limiter configuration differs from this node's.
# TYPE flux_cluster_config_mismatches_total counter
flux_cluster_config_mismatches_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"flux_decisions_total", "flux_errors_total", "flux_cleanup_removed_total", "flux_store_operations_total",
		"flux_gossip_updates_total", "flux_cluster_members", "flux_cluster_answers_total",
		"flux_cluster_config_mismatches_total"); err != nil {
		t.Fatal(err)
	}
	for name, labels := range map[string]map[string]string{
		"flux_check_duration_seconds":   {"limiter": "api"},
		"flux_request_duration_seconds": {"endpoint": "check"},
		"flux_cleanup_duration_seconds": {"limiter": "api"},
		"flux_store_duration_seconds":   {"limiter": "api", "op": "load"},
	} {
		if histCount(t, reg, name, labels) == 0 {
			t.Errorf("%s%v: no observation", name, labels)
		}
	}
	if n := histCount(t, reg, "flux_cleanup_duration_seconds", map[string]string{"limiter": "api"}); n != 2 {
		t.Errorf("cleanup durations = %d, want 2", n)
	}
}

func TestErrorKind(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{flux.ErrClock, metrics.KindClock},
		{fmt.Errorf("shard 1: %w", flux.ErrOverloaded), metrics.KindOverloaded},
		{flux.ErrFull, metrics.KindFull},
		{&flux.BatchError{Index: 3, Err: flux.ErrFull}, metrics.KindFull},
		{flux.ErrClosed, metrics.KindClosed},
		{flux.ErrPanic, metrics.KindPanic},
		{context.Canceled, metrics.KindCanceled},
		{context.DeadlineExceeded, metrics.KindTimeout},
		{flux.ErrEmptyKey, metrics.KindInvalid},
		{flux.ErrKeyTooLong, metrics.KindInvalid},
		{flux.ErrCostExceedsCapacity, metrics.KindInvalid},
		{flux.ErrInvalidCost, metrics.KindInvalid},
		{errors.New("something"), metrics.KindOther},
	} {
		if got := metrics.ErrorKind(c.err); got != c.want {
			t.Errorf("ErrorKind(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestTrackReplaceUntrack(t *testing.T) {
	m, reg := newMetrics(t)
	a := newLimiter(t, flux.Limit{Rate: 1}, flux.WithShards(3))
	b := newLimiter(t, flux.Limit{Rate: 1}, flux.WithShards(5), flux.WithMaxKeys(5))
	ctx := t.Context()
	for i := range 4 {
		if _, err := a.Check(ctx, "k"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	m.Track("api", a)
	s := series(t, reg)
	if s["flux_shard_mailbox_depth"] != 3 || s["flux_keys"] != 1 || s["flux_evictions_total"] != 1 ||
		s["flux_swept_keys_total"] != 1 || s["flux_refused_keys_total"] != 1 || s["flux_panics_total"] != 1 ||
		s["flux_clock_errors_total"] != 1 {
		t.Fatalf("series after Track: %v", s)
	}
	if got := testutil.ToFloat64(gaugeOf(t, reg, "flux_keys")); got != 4 {
		t.Fatalf("flux_keys = %v, want 4", got)
	}
	// b's shards hold at most one key each: some of 50 new keys are refused.
	refused := 0
	for i := range 50 {
		if _, err := b.Check(ctx, "b"+strconv.Itoa(i)); errors.Is(err, flux.ErrFull) {
			refused++
		}
	}
	m.Track("api", b) // replaces a
	if s := series(t, reg); s["flux_shard_mailbox_depth"] != 5 {
		t.Fatalf("mailbox series after replace = %d, want 5", s["flux_shard_mailbox_depth"])
	}
	want := fmt.Sprintf(`
# HELP flux_refused_keys_total New keys refused because their shard was full (flux.ErrFull).
# TYPE flux_refused_keys_total counter
flux_refused_keys_total{limiter="api"} %d
`, refused)
	if refused == 0 {
		t.Fatal("no key refused")
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "flux_refused_keys_total"); err != nil {
		t.Fatal(err)
	}
	m.Track("other", a)
	m.Untrack("api")
	if s := series(t, reg); s["flux_shard_mailbox_depth"] != 3 || s["flux_keys"] != 1 {
		t.Fatalf("after Untrack: %v", s)
	}
	m.Track("other", nil) // untracks
	if s := series(t, reg); s["flux_shard_mailbox_depth"] != 0 {
		t.Fatalf("after Track(nil): %v", s)
	}
}

func TestNilMetricsIsNoop(t *testing.T) {
	var m *metrics.Metrics
	l := newLimiter(t, flux.Limit{Rate: 1}, flux.WithHooks(m.Hooks("api")))
	if _, err := l.Check(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	m.Decision("api", true)
	m.Decisions("api", 1, 1)
	m.Error("api", "400")
	m.ObserveCheck("api", time.Second)
	m.ObserveRequest("check", time.Second)
	m.Cleanup("api", 1, time.Second)
	m.Track("api", l)
	m.Untrack("api")
	m.Store("api", "load", "ok")
	m.ObserveStore("api", "load", time.Second)
	m.Gossip("sent", 1)
	m.ClusterMembers(1)
	m.Answer("api", "local")
	m.ConfigMismatch()
	if h := m.Hooks("api"); h.AfterCheck != nil || h.OnError != nil || h.BeforeCheck != nil {
		t.Fatal("nil Metrics returned hooks")
	}
}

// Scrapes over HTTP while checks and Track calls run: -race must stay
// quiet and every scrape must parse.
func TestConcurrentUseAndScrape(t *testing.T) {
	m, reg := newMetrics(t)
	l := newLimiter(t, flux.Limit{Rate: 1000, Burst: 10}, flux.WithHooks(m.Hooks("api")))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil && i < 2000; i++ {
				_, _ = l.Check(ctx, "k"+strconv.Itoa(i%50))
				m.Decision("node-"+strconv.Itoa(g), i%2 == 0)
				if i%100 == 0 {
					m.Track("api", l)
				}
			}
		})
	}
	for range 10 {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "flux_decisions_total") {
			t.Fatalf("scrape: %d %s", resp.StatusCode, body)
		}
	}
	wg.Wait()
	c := testutil.ToFloat64(decisionCounter(t, reg, "api", "allowed")) + testutil.ToFloat64(decisionCounter(t, reg, "api", "denied"))
	if c != 8000 {
		t.Fatalf("api decisions = %v, want 8000", c)
	}
}

// The metrics hooks add no allocation to a check.
func TestHooksAddNoAllocations(t *testing.T) {
	m, _ := newMetrics(t)
	plain := newLimiter(t, flux.Limit{Rate: 1e9, Burst: 1e6})
	hooked := newLimiter(t, flux.Limit{Rate: 1e9, Burst: 1e6}, flux.WithHooks(m.Hooks("api")))
	ctx := context.Background()
	a := testing.AllocsPerRun(1000, func() { _, _ = plain.Check(ctx, "k") })
	b := testing.AllocsPerRun(1000, func() { _, _ = hooked.Check(ctx, "k") })
	if b > a {
		t.Fatalf("allocations per check: %v with hooks, %v without", b, a)
	}
}
