package metrics_test

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxlimiter/flux/metrics"
)

func benchMetrics(b *testing.B) *metrics.Metrics {
	b.Helper()
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkDecision is the reference: a decision is an atomic add on a
// child resolved once per limiter.
func BenchmarkDecision(b *testing.B) {
	m := benchMetrics(b)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		m.Decision("api", true)
	}
}

// BenchmarkObserveRequest is what flux-node pays per request for
// flux_request_duration_seconds.
func BenchmarkObserveRequest(b *testing.B) {
	m := benchMetrics(b)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		m.ObserveRequest("check", 40*time.Microsecond)
	}
}

// BenchmarkObserveRequestParallel is the same from every core, as the
// node's lane workers call it.
func BenchmarkObserveRequestParallel(b *testing.B) {
	m := benchMetrics(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveRequest("check", 40*time.Microsecond)
		}
	})
}

// cpuPerOp locks the benchmark to its OS thread and returns a func, to
// defer, that reports the thread's CPU time per operation as cpu-ns/op:
// on a loaded machine it moves far less than the wall-clock ns/op.
func cpuPerOp(b *testing.B) func() {
	runtime.LockOSThread()
	start, ok := threadCPU()
	return func() {
		end, _ := threadCPU()
		runtime.UnlockOSThread()
		if ok && b.N > 0 {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// The endpoint cache must not grow past the bound: endpoints beyond
// MaxEndpoints share OtherLabel's series.
func TestRequestEndpointsAreBounded(t *testing.T) {
	m, reg := newMetrics(t)
	for i := range metrics.MaxEndpoints + 50 {
		m.ObserveRequest("ep-"+strconv.Itoa(i), time.Millisecond)
		m.ObserveRequest("ep-"+strconv.Itoa(i), time.Millisecond)
	}
	if s := series(t, reg)["flux_request_duration_seconds"]; s != metrics.MaxEndpoints+1 {
		t.Fatalf("request duration series = %d, want %d", s, metrics.MaxEndpoints+1)
	}
	if n := histCount(t, reg, "flux_request_duration_seconds", map[string]string{"endpoint": metrics.OtherLabel}); n != 100 {
		t.Fatalf("%s observations = %d, want 100", metrics.OtherLabel, n)
	}
	if n := histCount(t, reg, "flux_request_duration_seconds", map[string]string{"endpoint": "ep-3"}); n != 2 {
		t.Fatalf("ep-3 observations = %d, want 2", n)
	}
}
