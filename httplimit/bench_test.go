package httplimit_test

import (
	"context"
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/httplimit"
)

// discard is a ResponseWriter that keeps nothing, so the benchmark
// measures the middleware rather than a recorder.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

// stubChecker answers at once, as a limiter with no channel round trip
// would, and reports its limit like *flux.Limiter.
type stubChecker struct{}

func (stubChecker) CheckN(context.Context, string, int) (flux.Decision, error) {
	return flux.Decision{Allowed: true, Limit: 1000001, Remaining: 999999, ResetAfter: time.Microsecond}, nil
}

func (stubChecker) Limit() flux.Limit { return flux.Limit{Rate: 1e9, Burst: 1e6} }

// BenchmarkMiddleware: the cost per request of a bare handler (bare); of
// the middleware with a local limiter that never denies (limited), over
// 1000 client addresses; of that limiter's check alone (check); and of the
// middleware around a checker that answers at once (stub), which is the
// middleware's own cost: key, headers, dispatch. bare and stub also
// report cpu-ns/op, their thread's CPU time per request, which time spent
// descheduled on a busy machine does not inflate (limited and check do
// not: locking their thread would slow the channel round trip).
func BenchmarkMiddleware(b *testing.B) {
	l, err := flux.New(flux.Limit{Rate: 1e9, Burst: 1e6})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	reqs := make([]*http.Request, 1000)
	keys := make([]string, len(reqs))
	for i := range reqs {
		r, _ := http.NewRequest("GET", "http://example.com/api/items", nil)
		r.RemoteAddr = "198.51." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256) + ":40000"
		reqs[i] = r
		keys[i] = r.RemoteAddr[:len(r.RemoteAddr)-6]
	}
	run := func(b *testing.B, h http.Handler, cpu bool) {
		w := &discard{h: http.Header{}}
		b.ReportAllocs()
		if cpu {
			defer cpuPerOp(b)()
		}
		i := 0
		for b.Loop() {
			clear(w.h)
			h.ServeHTTP(w, reqs[i%len(reqs)])
			i++
		}
	}
	b.Run("bare", func(b *testing.B) { run(b, bare, true) })
	b.Run("limited", func(b *testing.B) { run(b, httplimit.Middleware(l)(bare), false) })
	b.Run("stub", func(b *testing.B) {
		run(b, httplimit.Middleware(nil, httplimit.WithChecker(stubChecker{}))(bare), true)
	})
	b.Run("check", func(b *testing.B) {
		ctx := context.Background()
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Check(ctx, keys[i%len(keys)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
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
