package flux_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
)

// recorder records hook and middleware calls as strings, in order.
type recorder struct {
	mu  sync.Mutex
	evs []string
	lat []time.Duration
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.evs = append(r.evs, s)
	r.mu.Unlock()
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.evs
	r.evs = nil
	return evs
}

func (r *recorder) hooks(name string) flux.Hooks {
	return flux.Hooks{
		BeforeCheck: func(_ context.Context, key string, cost int) {
			r.add(fmt.Sprintf("%s.before %s %d", name, key, cost))
		},
		AfterCheck: func(_ context.Context, key string, cost int, d flux.Decision, lat time.Duration) {
			r.mu.Lock()
			r.lat = append(r.lat, lat)
			r.mu.Unlock()
			r.add(fmt.Sprintf("%s.after %s %d allowed=%v rem=%d retry=%v", name, key, cost, d.Allowed, d.Remaining, d.RetryAfter))
		},
		OnError: func(_ context.Context, key string, cost int, err error, lat time.Duration) {
			r.add(fmt.Sprintf("%s.error %s %d %s", name, key, cost, errName(err)))
		},
	}
}

func (r *recorder) middleware(name string) flux.Middleware {
	return func(next flux.CheckFunc) flux.CheckFunc {
		return func(ctx context.Context, key string, cost int) (flux.Decision, error) {
			r.add(name + ".in " + key)
			d, err := next(ctx, key, cost)
			r.add(fmt.Sprintf("%s.out %s allowed=%v err=%v", name, key, d.Allowed, err != nil))
			return d, err
		}
	}
}

func errName(err error) string {
	for _, s := range []struct {
		e    error
		name string
	}{
		{flux.ErrCostExceedsBurst, "ErrCostExceedsBurst"},
		{flux.ErrEmptyKey, "ErrEmptyKey"},
		{flux.ErrInvalidCost, "ErrInvalidCost"},
		{flux.ErrClosed, "ErrClosed"},
		{flux.ErrClock, "ErrClock"},
		{context.Canceled, "Canceled"},
	} {
		if errors.Is(err, s.e) {
			return s.name
		}
	}
	return "other: " + err.Error()
}

func hkLimiter(t *testing.T, lim flux.Limit, opts ...flux.Option) (*flux.Limiter, *clock.Manual) {
	t.Helper()
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	l, err := flux.New(lim, append([]flux.Option{flux.WithClock(clk), flux.WithShards(2)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, clk
}

func wantEvents(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n got  %q\n want %q", got, want)
	}
}

func TestHooksOrderAndArguments(t *testing.T) {
	var r recorder
	l, clk := hkLimiter(t, flux.Limit{Rate: 2, Burst: 1},
		flux.WithMiddleware(r.middleware("mw1")),
		flux.WithHooks(r.hooks("h1")),
		flux.WithMiddleware(r.middleware("mw2")),
		flux.WithHooks(r.hooks("h2")),
	)
	ctx := t.Context()

	if d, err := l.Check(ctx, "alice"); err != nil || !d.Allowed || d.Remaining != 1 {
		t.Fatalf("first: %+v %v", d, err)
	}
	wantEvents(t, r.take(),
		"mw1.in alice", "mw2.in alice",
		"h1.before alice 1", "h2.before alice 1",
		"h1.after alice 1 allowed=true rem=1 retry=0s", "h2.after alice 1 allowed=true rem=1 retry=0s",
		"mw2.out alice allowed=true err=false", "mw1.out alice allowed=true err=false")

	if _, err := l.CheckN(ctx, "alice", 1); err != nil {
		t.Fatal(err)
	}
	r.take()
	// Denied: AfterCheck sees the denial and its RetryAfter.
	if d, err := l.Check(ctx, "alice"); err != nil || d.Allowed {
		t.Fatalf("third: %+v %v", d, err)
	}
	wantEvents(t, r.take(),
		"mw1.in alice", "mw2.in alice",
		"h1.before alice 1", "h2.before alice 1",
		"h1.after alice 1 allowed=false rem=0 retry=500ms", "h2.after alice 1 allowed=false rem=0 retry=500ms",
		"mw2.out alice allowed=false err=false", "mw1.out alice allowed=false err=false")

	// Errors go to OnError, not AfterCheck; validation errors included.
	if _, err := l.CheckN(ctx, "alice", 3); !errors.Is(err, flux.ErrCostExceedsBurst) {
		t.Fatalf("cost 3: %v", err)
	}
	wantEvents(t, r.take(),
		"mw1.in alice", "mw2.in alice",
		"h1.before alice 3", "h2.before alice 3",
		"h1.error alice 3 ErrCostExceedsBurst", "h2.error alice 3 ErrCostExceedsBurst",
		"mw2.out alice allowed=false err=true", "mw1.out alice allowed=false err=true")

	// Peek is a check of cost 0.
	clk.Advance(time.Second)
	if _, err := l.Peek(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, r.take(),
		"mw1.in alice", "mw2.in alice",
		"h1.before alice 0", "h2.before alice 0",
		"h1.after alice 0 allowed=true rem=2 retry=0s", "h2.after alice 0 allowed=true rem=2 retry=0s",
		"mw2.out alice allowed=true err=false", "mw1.out alice allowed=true err=false")

	r.mu.Lock()
	defer r.mu.Unlock()
	for _, lat := range r.lat {
		if lat <= 0 || lat > 10*time.Second {
			t.Fatalf("latency %v", lat)
		}
	}
}

func TestHooksOnlyBeforeOrOnlyError(t *testing.T) {
	var r recorder
	h := r.hooks("h")
	l, _ := hkLimiter(t, flux.Limit{Rate: 1},
		flux.WithHooks(flux.Hooks{BeforeCheck: h.BeforeCheck}),
		flux.WithHooks(flux.Hooks{OnError: h.OnError}),
		flux.WithHooks(flux.Hooks{}), // ignored
	)
	ctx := t.Context()
	if _, err := l.Check(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Check(ctx, ""); !errors.Is(err, flux.ErrEmptyKey) {
		t.Fatal(err)
	}
	wantEvents(t, r.take(), "h.before k 1", "h.before  1", "h.error  1 ErrEmptyKey")
}

func TestMiddlewareChangesKeyAndShortCircuits(t *testing.T) {
	var r recorder
	allow := flux.Middleware(func(next flux.CheckFunc) flux.CheckFunc {
		return func(ctx context.Context, key string, cost int) (flux.Decision, error) {
			if key == "admin" {
				return flux.Decision{Allowed: true, Limit: 1, Remaining: 1}, nil
			}
			return next(ctx, "tenant-a:"+strings.ToLower(key), cost)
		}
	})
	l, _ := hkLimiter(t, flux.Limit{Rate: 1}, flux.WithMiddleware(allow), flux.WithHooks(r.hooks("h")))
	ctx := t.Context()
	for range 3 {
		if d, err := l.Check(ctx, "admin"); err != nil || !d.Allowed {
			t.Fatalf("admin: %+v %v", d, err)
		}
	}
	if d, _ := l.Check(ctx, "Bob"); !d.Allowed {
		t.Fatal("bob denied")
	}
	if d, _ := l.Check(ctx, "bob"); d.Allowed {
		t.Fatal("bob's second request (same normalised key) admitted")
	}
	wantEvents(t, r.take(),
		"h.before tenant-a:bob 1", "h.after tenant-a:bob 1 allowed=true rem=0 retry=0s",
		"h.before tenant-a:bob 1", "h.after tenant-a:bob 1 allowed=false rem=0 retry=1s")
	if l.Len() != 1 {
		t.Fatalf("Len = %d, want 1 (admin never reached the limiter)", l.Len())
	}
}

func TestPanickingHooksAreContained(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	var r recorder
	boom := flux.Hooks{
		BeforeCheck: func(context.Context, string, int) { panic("before") },
		AfterCheck:  func(context.Context, string, int, flux.Decision, time.Duration) { panic("after") },
		OnError:     func(context.Context, string, int, error, time.Duration) { panic(errors.New("onerror")) },
	}
	l, _ := hkLimiter(t, flux.Limit{Rate: 1, Burst: 1}, flux.WithLogger(logger),
		flux.WithHooks(boom), flux.WithHooks(r.hooks("h")))
	ctx := t.Context()
	d, err := l.Check(ctx, "k")
	if err != nil || !d.Allowed || d.Remaining != 1 {
		t.Fatalf("check with panicking hooks: %+v %v", d, err)
	}
	if _, err := l.CheckN(ctx, "k", 9); !errors.Is(err, flux.ErrCostExceedsBurst) {
		t.Fatalf("error check: %v", err)
	}
	out := make([]flux.Decision, 2)
	if err := l.CheckBatch(ctx, []flux.Request{{Key: "a", Cost: 1}, {Key: "b", Cost: 1}}, out); err != nil || !out[0].Allowed || !out[1].Allowed {
		t.Fatalf("batch: %+v %v", out, err)
	}
	// The hooks after the panicking ones still ran.
	wantEvents(t, r.take(),
		"h.before k 1", "h.after k 1 allowed=true rem=1 retry=0s",
		"h.before k 9", "h.error k 9 ErrCostExceedsBurst",
		"h.before a 1", "h.before b 1",
		"h.after a 1 allowed=true rem=1 retry=0s", "h.after b 1 allowed=true rem=1 retry=0s")
	mu.Lock()
	got := logs.String()
	mu.Unlock()
	for _, want := range []string{"hook=BeforeCheck panic=before", "hook=AfterCheck panic=after", "hook=OnError panic=onerror"} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func TestPanickingMiddlewareFailsTheCheck(t *testing.T) {
	l, _ := hkLimiter(t, flux.Limit{Rate: 1}, flux.WithMiddleware(func(next flux.CheckFunc) flux.CheckFunc {
		return func(ctx context.Context, key string, cost int) (flux.Decision, error) {
			if key == "bad" {
				panic("middleware bug")
			}
			return next(ctx, key, cost)
		}
	}))
	if _, err := l.Check(t.Context(), "bad"); !errors.Is(err, flux.ErrPanic) {
		t.Fatalf("err = %v, want ErrPanic", err)
	}
	if d, err := l.Check(t.Context(), "good"); err != nil || !d.Allowed {
		t.Fatalf("after a panic: %+v %v", d, err)
	}
}

func TestMiddlewareReturningNilIsSkipped(t *testing.T) {
	var r recorder
	l, _ := hkLimiter(t, flux.Limit{Rate: 1},
		flux.WithMiddleware(r.middleware("outer")),
		flux.WithMiddleware(func(flux.CheckFunc) flux.CheckFunc { return nil }),
		flux.WithMiddleware(r.middleware("inner")))
	if d, err := l.Check(t.Context(), "k"); err != nil || !d.Allowed {
		t.Fatalf("%+v %v", d, err)
	}
	wantEvents(t, r.take(), "outer.in k", "inner.in k", "inner.out k allowed=true err=false", "outer.out k allowed=true err=false")
}

func TestHooksBatch(t *testing.T) {
	var r recorder
	l, _ := hkLimiter(t, flux.Limit{Rate: 1}, flux.WithHooks(r.hooks("h")))
	ctx := t.Context()
	reqs := []flux.Request{{Key: "a", Cost: 1}, {Key: "b", Cost: 1}, {Key: "a", Cost: 1}}
	out := make([]flux.Decision, 3)
	if err := l.CheckBatch(ctx, reqs, out); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, r.take(),
		"h.before a 1", "h.before b 1", "h.before a 1",
		"h.after a 1 allowed=true rem=0 retry=0s", "h.after b 1 allowed=true rem=0 retry=0s",
		"h.after a 1 allowed=false rem=0 retry=1s")

	// An invalid item fails the whole batch: OnError for every item.
	bad := []flux.Request{{Key: "c", Cost: 1}, {Key: "", Cost: 1}}
	err := l.CheckBatch(ctx, bad, out)
	var be *flux.BatchError
	if !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("err = %v", err)
	}
	wantEvents(t, r.take(), "h.before c 1", "h.before  1", "h.error c 1 ErrEmptyKey", "h.error  1 ErrEmptyKey")

	// CheckBatchEach reports per item.
	itemErrs := make([]error, 2)
	if err := l.CheckBatchEach(ctx, []flux.Request{{Key: "d", Cost: 1}, {Key: "e", Peek: true}}, out, itemErrs); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, r.take(), "h.before d 1", "h.before e 0",
		"h.after d 1 allowed=true rem=0 retry=0s", "h.after e 0 allowed=true rem=1 retry=0s")
}

func TestHooksAsync(t *testing.T) {
	var r recorder
	l, _ := hkLimiter(t, flux.Limit{Rate: 1}, flux.WithHooks(r.hooks("h")))
	ctx := t.Context()
	f := l.CheckAsync(ctx, "a")
	wantEvents(t, r.take(), "h.before a 1")
	for range 2 { // the after hook runs once, in the first Wait
		if d, err := f.Wait(ctx); err != nil || !d.Allowed {
			t.Fatalf("%+v %v", d, err)
		}
	}
	wantEvents(t, r.take(), "h.after a 1 allowed=true rem=0 retry=0s")

	f = l.CheckNAsync(ctx, "", 1) // fails before sending
	if _, err := f.Wait(ctx); !errors.Is(err, flux.ErrEmptyKey) {
		t.Fatal(err)
	}
	wantEvents(t, r.take(), "h.before  1", "h.error  1 ErrEmptyKey")

	reqs := []flux.Request{{Key: "a", Cost: 1}, {Key: "b", Cost: 1}}
	bf := l.CheckBatchAsync(ctx, reqs)
	reqs[0].Key = "changed" // the caller may reuse reqs at once
	if _, err := bf.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := bf.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, r.take(), "h.before a 1", "h.before b 1",
		"h.after a 1 allowed=false rem=0 retry=1s", "h.after b 1 allowed=true rem=0 retry=0s")

	// A Wait whose context ends reports that error to OnError.
	f = l.CheckAsync(ctx, "c")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := f.Wait(cctx)
	if !errors.Is(err, context.Canceled) {
		if err != nil {
			t.Fatal(err)
		}
		// The shard answered before Wait looked at the context.
		wantEvents(t, r.take(), "h.before c 1", "h.after c 1 allowed=true rem=0 retry=0s")
	} else {
		wantEvents(t, r.take(), "h.before c 1", "h.error c 1 Canceled")
	}
	_, _ = f.Wait(ctx)
	wantEvents(t, r.take()) // nothing more
}

func TestHooksAfterClose(t *testing.T) {
	var r recorder
	clk := clock.NewManual(time.Unix(0, 0))
	l, err := flux.New(flux.Limit{Rate: 1}, flux.WithClock(clk), flux.WithHooks(r.hooks("h")))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := l.Check(t.Context(), "k"); !errors.Is(err, flux.ErrClosed) {
		t.Fatal(err)
	}
	wantEvents(t, r.take(), "h.before k 1", "h.error k 1 ErrClosed")
}

func TestHooksConcurrent(t *testing.T) {
	var mu sync.Mutex
	allowed, denied := 0, 0
	l, _ := hkLimiter(t, flux.Limit{Rate: 1, Burst: 99}, flux.WithHooks(flux.Hooks{
		AfterCheck: func(_ context.Context, _ string, _ int, d flux.Decision, _ time.Duration) {
			mu.Lock()
			if d.Allowed {
				allowed++
			} else {
				denied++
			}
			mu.Unlock()
		},
	}))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := l.Check(t.Context(), "shared"); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if allowed != 100 || denied != 300 {
		t.Fatalf("allowed %d denied %d, want 100 and 300", allowed, denied)
	}
}

func TestLatencySample(t *testing.T) {
	var mu sync.Mutex
	var lats []time.Duration
	rec := func(_ context.Context, _ string, _ int, _ flux.Decision, lat time.Duration) {
		mu.Lock()
		lats = append(lats, lat)
		mu.Unlock()
	}
	take := func() (zero, timed int) {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lats {
			if l == 0 {
				zero++
			} else if l > 0 {
				timed++
			}
		}
		lats = nil
		return zero, timed
	}
	// One check in 2^30 timed: in practice none of 200.
	sparse := flux.Hooks{AfterCheck: rec, LatencySample: 1 << 30}
	l, _ := hkLimiter(t, flux.Limit{Rate: 1, Burst: 1e6}, flux.WithHooks(sparse))
	for range 200 {
		if _, err := l.Check(t.Context(), "k"); err != nil {
			t.Fatal(err)
		}
	}
	if zero, timed := take(); zero != 200 || timed != 0 {
		t.Fatalf("sparse: %d untimed, %d timed", zero, timed)
	}
	// A second hook that wants every latency makes every check timed.
	l2, _ := hkLimiter(t, flux.Limit{Rate: 1, Burst: 1e6}, flux.WithHooks(sparse),
		flux.WithHooks(flux.Hooks{OnError: func(context.Context, string, int, error, time.Duration) {}}))
	for range 200 {
		if _, err := l2.Check(t.Context(), "k"); err != nil {
			t.Fatal(err)
		}
	}
	if zero, timed := take(); zero != 0 || timed != 200 {
		t.Fatalf("mixed: %d untimed, %d timed", zero, timed)
	}
}
