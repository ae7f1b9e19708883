package flux_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/metrics"
	"github.com/fluxlimiter/flux/tracing"
)

// BenchmarkCheckObserved is BenchmarkCheck (parallel callers, 10k keys, a
// limit that never denies) with nothing observing the checks, with the
// Prometheus metrics hooks, and with tracing configured but not sampled
// (an SDK provider that samples nothing, and the tracing middleware
// installed), so the three compare in one run.
func BenchmarkCheckObserved(b *testing.B) {
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%05d", i)
	}
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	defer tp.Shutdown(context.Background())
	// The caller's request span, not sampled, as an HTTP server would have.
	traced, _ := tp.Tracer("bench").Start(context.Background(), "request")

	for _, c := range []struct {
		name string
		ctx  context.Context
		opts []flux.Option
	}{
		{"none", context.Background(), nil},
		{"metrics", context.Background(), []flux.Option{flux.WithHooks(m.Hooks("bench"))}},
		{"tracing-unsampled", traced, []flux.Option{flux.WithHooks(tracing.New(tp).CheckHooks("bench"))}},
	} {
		b.Run(c.name, func(b *testing.B) {
			l, err := flux.New(flux.Limit{Rate: 1e9, Burst: 1e6}, c.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, err := l.Check(c.ctx, keys[i%len(keys)]); err != nil {
						b.Error(err)
						return
					}
					i += 7
				}
			})
		})
	}
}

// BenchmarkObserverOverhead measures only what observing adds to a check:
// the same three configurations as BenchmarkCheckObserved, with the shards
// replaced by a stub that answers at once, so the figures are the check's
// own path (validation, hooks, middleware) free of the channel round
// trip's scheduling noise. Besides ns/op each reports cpu-ns/op, the CPU
// time of the benchmark's thread per check, which time spent descheduled
// on a busy machine does not inflate.
func BenchmarkObserverOverhead(b *testing.B) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	defer tp.Shutdown(context.Background())
	traced, _ := tp.Tracer("bench").Start(context.Background(), "request")
	for _, c := range []struct {
		name string
		ctx  context.Context
		opts []flux.Option
	}{
		{"none", context.Background(), nil},
		{"metrics", context.Background(), []flux.Option{flux.WithHooks(m.Hooks("bench"))}},
		{"metrics-every-check", context.Background(), []flux.Option{flux.WithHooks(m.Hooks("bench", metrics.WithLatencySample(1)))}},
		{"tracing-unsampled", traced, []flux.Option{flux.WithHooks(tracing.New(tp).CheckHooks("bench"))}},
	} {
		b.Run(c.name, func(b *testing.B) {
			l, err := flux.New(flux.Limit{Rate: 1e9, Burst: 1e6}, c.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			flux.StubShardsForTest(l, flux.Decision{Allowed: true, Limit: 10, Remaining: 9})
			b.ReportAllocs()
			defer cpuPerOp(b)()
			for b.Loop() {
				if _, err := l.Check(c.ctx, "user-00001"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// cpuPerOp locks the benchmark to its thread and returns a function, to
// defer, that reports the thread's CPU time per operation as cpu-ns/op.
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
