package flux_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/internal/fluxtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = fluxtest.T0

// newLimiter is a limiter on a manual clock at t0, closed with the test.
var newLimiter = fluxtest.New

func check(t *testing.T, l *flux.Limiter, key string, n int) flux.Decision {
	t.Helper()
	d, err := l.CheckN(t.Context(), key, n)
	if err != nil {
		t.Fatalf("CheckN(%q, %d): %v", key, n, err)
	}
	return d
}

// FluxLimiter's documented example: 10/s with burst 5 admits 6 at once, then
// exactly one per 100 ms.
func TestRate10Burst5(t *testing.T) {
	l, clk := newLimiter(t, flux.Limit{Rate: 10, Burst: 5})
	for i := range 6 {
		d := check(t, l, "alice", 1)
		if !d.Allowed || d.Limit != 6 || d.Remaining != 5-i {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	d := check(t, l, "alice", 1)
	if d.Allowed || d.Remaining != 0 || d.RetryAfter != 100*time.Millisecond {
		t.Fatalf("7th: %+v", d)
	}
	for i := range 50 {
		clk.Advance(100 * time.Millisecond)
		if d := check(t, l, "alice", 1); !d.Allowed {
			t.Fatalf("period %d: %+v", i, d)
		}
		if d := check(t, l, "alice", 1); d.Allowed {
			t.Fatalf("period %d: two admitted in 100ms", i)
		}
	}
	if d := check(t, l, "bob", 1); !d.Allowed || d.Remaining != 5 {
		t.Fatalf("another key is independent: %+v", d)
	}
}

func TestRate2Burst0(t *testing.T) {
	l, _ := newLimiter(t, flux.Limit{Rate: 2})
	if d := check(t, l, "k", 1); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("first: %+v", d)
	}
	if d := check(t, l, "k", 1); d.Allowed || d.RetryAfter != 500*time.Millisecond || d.Remaining != 0 {
		t.Fatalf("second: %+v", d)
	}
}

func TestWaitingRetryAfterAdmits(t *testing.T) {
	l, clk := newLimiter(t, flux.Limit{Rate: 3, Burst: 1.5})
	var d flux.Decision
	for d = check(t, l, "k", 1); d.Allowed; d = check(t, l, "k", 1) {
	}
	clk.Advance(d.RetryAfter - 1)
	if d2 := check(t, l, "k", 1); d2.Allowed {
		t.Fatalf("admitted 1ns before RetryAfter %v", d.RetryAfter)
	}
	clk.Advance(1)
	if d2 := check(t, l, "k", 1); !d2.Allowed {
		t.Fatalf("denied after exactly RetryAfter %v: %+v", d.RetryAfter, d2)
	}
}

func TestCostNAndPeek(t *testing.T) {
	a, _ := newLimiter(t, flux.Limit{Rate: 10, Burst: 9})
	b, _ := newLimiter(t, flux.Limit{Rate: 10, Burst: 9})
	da := check(t, a, "k", 4)
	var db flux.Decision
	for range 4 {
		db = check(t, b, "k", 1)
	}
	if da != db {
		t.Fatalf("CheckN(4) = %+v; four Checks = %+v", da, db)
	}
	p1 := check(t, a, "k", 0)
	p2, err := a.Peek(t.Context(), "k")
	if err != nil || p1 != p2 || p1.Remaining != 6 || !p1.Allowed {
		t.Fatalf("peeks %+v %+v %v", p1, p2, err)
	}
	if d := check(t, a, "k", 6); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("peeks consumed something: %+v", d)
	}
	if _, err := a.CheckN(t.Context(), "k", 11); !errors.Is(err, flux.ErrCostExceedsCapacity) {
		t.Fatalf("cost 11 with capacity 10: %v", err)
	}
	if _, err := a.CheckN(t.Context(), "k", -1); !errors.Is(err, flux.ErrInvalidCost) {
		t.Fatalf("cost -1: %v", err)
	}
}

func TestValidation(t *testing.T) {
	for _, tc := range []struct {
		lim  flux.Limit
		want error
	}{
		{flux.Limit{Rate: 0, Burst: 1}, flux.ErrInvalidLimit},
		{flux.Limit{Rate: 2e9}, flux.ErrInvalidLimit},
		{flux.Limit{Rate: 1, Burst: -1}, flux.ErrInvalidLimit},
	} {
		if _, err := flux.New(tc.lim); !errors.Is(err, tc.want) {
			t.Errorf("New(%+v) = %v; want %v", tc.lim, err, tc.want)
		}
	}
	if _, err := flux.New(flux.Limit{Rate: 1}, flux.WithShards(0)); !errors.Is(err, flux.ErrInvalidArgument) {
		t.Errorf("WithShards(0): %v", err)
	}
	l, _ := newLimiter(t, flux.Limit{Rate: 1}, flux.WithMaxKeyLen(8))
	if _, err := l.Check(t.Context(), ""); !errors.Is(err, flux.ErrEmptyKey) {
		t.Errorf("empty key: %v", err)
	}
	if _, err := l.Check(t.Context(), "123456789"); !errors.Is(err, flux.ErrKeyTooLong) {
		t.Errorf("9-byte key with max 8: %v", err)
	}
	if _, err := l.Check(t.Context(), "12345678"); err != nil {
		t.Errorf("8-byte key: %v", err)
	}
	d, _ := newLimiter(t, flux.Limit{Rate: 1})
	if _, err := d.Check(t.Context(), strings.Repeat("x", flux.DefaultMaxKeyLen+1)); !errors.Is(err, flux.ErrKeyTooLong) {
		t.Errorf("default bound: %v", err)
	}
	if c := (flux.Limit{Rate: 5, Burst: 2.7}).Capacity(); c != 3 {
		t.Errorf("capacity of burst 2.7 = %d; want 3", c)
	}
}

func TestCheckBatch(t *testing.T) {
	l, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 2}, flux.WithShards(4))
	ref, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 2}, flux.WithShards(1))
	rng := rand.New(rand.NewPCG(3, 4))
	reqs := make([]flux.Request, 500)
	for i := range reqs {
		c := rng.IntN(4)
		reqs[i] = flux.Request{Key: fmt.Sprintf("k%d", rng.IntN(40)), Cost: c, Peek: c == 0}
	}
	out := make([]flux.Decision, len(reqs))
	if err := l.CheckBatch(t.Context(), reqs, out); err != nil {
		t.Fatal(err)
	}
	for i, r := range reqs {
		if want := check(t, ref, r.Key, r.Cost); out[i] != want {
			t.Fatalf("item %d (%+v): batch %+v, sequential %+v", i, r, out[i], want)
		}
	}
}

func TestCheckBatchValidatesBeforeApplying(t *testing.T) {
	l, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 2})
	out := make([]flux.Decision, 4)
	for _, tc := range []struct {
		bad  flux.Request
		want error
	}{
		{flux.Request{Key: "", Cost: 1}, flux.ErrEmptyKey},
		{flux.Request{Key: "x", Cost: -2}, flux.ErrInvalidCost},
		{flux.Request{Key: "x", Cost: 4}, flux.ErrCostExceedsCapacity},
		{flux.Request{Key: strings.Repeat("k", 2000), Cost: 1}, flux.ErrKeyTooLong},
	} {
		reqs := []flux.Request{{Key: "a", Cost: 1}, {Key: "b", Cost: 3}, tc.bad, {Key: "c", Cost: 1}}
		err := l.CheckBatch(t.Context(), reqs, out)
		var be *flux.BatchError
		if !errors.As(err, &be) || be.Index != 2 || !errors.Is(err, tc.want) {
			t.Fatalf("batch with %+v: %v; want BatchError at 2 wrapping %v", tc.bad, err, tc.want)
		}
		// The message names the package once, whatever the item's error.
		if msg := err.Error(); strings.Count(msg, "flux:") != 1 || !strings.HasPrefix(msg, "flux: batch item 2: ") {
			t.Fatalf("batch error message %q: want one \"flux:\" prefix", msg)
		}
	}
	if l.Len() != 0 {
		t.Fatalf("invalid batches stored %d keys", l.Len())
	}
	if d := check(t, l, "b", 3); !d.Allowed {
		t.Fatal("an invalid batch consumed b's capacity")
	}
	if err := l.CheckBatch(t.Context(), []flux.Request{{Key: "a", Cost: 1}}, nil); !errors.Is(err, flux.ErrInvalidArgument) {
		t.Fatalf("short out: %v", err)
	}
	if err := l.CheckBatch(t.Context(), nil, nil); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
}

func TestClockFailure(t *testing.T) {
	l, clk := newLimiter(t, flux.Limit{Rate: 1})
	boom := errors.New("clock source gone")
	clk.Fail(boom)
	_, err := l.Check(t.Context(), "k")
	if !errors.Is(err, flux.ErrClock) || !errors.Is(err, boom) {
		t.Fatalf("Check with a failing clock: %v", err)
	}
	out := make([]flux.Decision, 2)
	if err := l.CheckBatch(t.Context(), []flux.Request{{Key: "a", Cost: 1}, {Key: "b", Cost: 1}}, out); !errors.Is(err, flux.ErrClock) {
		t.Fatalf("CheckBatch with a failing clock: %v", err)
	}
	// An admission made elsewhere for a key not held needs the clock too
	// (is it already forgotten?): it fails, and applies nothing.
	if err := l.Apply(t.Context(), []flux.Update{{Key: "k", At: t0.UnixNano(), Cost: 1}}); !errors.Is(err, flux.ErrClock) || !errors.Is(err, boom) {
		t.Fatalf("Apply with a failing clock: %v", err)
	}
	clk.Recover()
	if d := check(t, l, "k", 1); !d.Allowed {
		t.Fatalf("after the clock recovered: %+v", d)
	}
}

func TestClosed(t *testing.T) {
	l, err := flux.New(flux.Limit{Rate: 1})
	if err != nil {
		t.Fatal(err)
	}
	check(t, l, "k", 1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := t.Context()
	if _, err := l.Check(ctx, "k"); !errors.Is(err, flux.ErrClosed) {
		t.Errorf("Check: %v", err)
	}
	if _, err := l.Peek(ctx, "k"); !errors.Is(err, flux.ErrClosed) {
		t.Errorf("Peek: %v", err)
	}
	if err := l.CheckBatch(ctx, []flux.Request{{Key: "k", Cost: 1}}, make([]flux.Decision, 1)); !errors.Is(err, flux.ErrClosed) {
		t.Errorf("CheckBatch: %v", err)
	}
	if err := l.SetLimit(ctx, flux.Limit{Rate: 2}); !errors.Is(err, flux.ErrClosed) {
		t.Errorf("SetLimit: %v", err)
	}
	if _, err := l.Cleanup(ctx, 0); !errors.Is(err, flux.ErrClosed) {
		t.Errorf("Cleanup: %v", err)
	}
	if _, err := l.CheckAsync(ctx, "k").Wait(ctx); !errors.Is(err, flux.ErrClosed) {
		t.Errorf("CheckAsync: %v", err)
	}
	if _, err := l.CleanupAsync(ctx, 0).Wait(ctx); !errors.Is(err, flux.ErrClosed) {
		t.Errorf("CleanupAsync: %v", err)
	}
	if err := l.Apply(ctx, []flux.Update{{Key: "k", Cost: 1}}); !errors.Is(err, flux.ErrClosed) {
		t.Errorf("Apply: %v", err)
	}
	if _, err := l.Snapshot(ctx); !errors.Is(err, flux.ErrClosed) {
		t.Errorf("Snapshot: %v", err)
	}
	if l.Len() != 0 {
		t.Errorf("Len after Close = %d", l.Len())
	}
}

// blockingClock blocks the shard that reads it until released, so tests
// can fill a mailbox.
type blockingClock struct {
	entered chan struct{}
	release chan struct{}
	armed   atomic.Bool
}

func (c *blockingClock) Now() (int64, error) {
	if c.armed.CompareAndSwap(true, false) {
		c.entered <- struct{}{}
		<-c.release
	}
	return t0.UnixNano(), nil
}

func TestCancelWhileMailboxFull(t *testing.T) {
	clk := &blockingClock{entered: make(chan struct{}), release: make(chan struct{})}
	l, err := flux.New(flux.Limit{Rate: 1, Burst: 100}, flux.WithClock(clk), flux.WithShards(1),
		flux.WithMailbox(1), flux.WithOverloadWait(0))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	clk.armed.Store(true)
	first := l.CheckAsync(t.Context(), "a") // the shard blocks on its clock
	<-clk.entered
	second := l.CheckAsync(t.Context(), "b") // fills the mailbox
	ctx, cancel := context.WithCancel(t.Context())
	res := make(chan error, 1)
	go func() { _, err := l.Check(ctx, "c"); res <- err }()
	select {
	case err := <-res:
		t.Fatalf("Check returned %v while the mailbox was full and ctx alive", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if err := <-res; !errors.Is(err, flux.ErrOverloaded) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled while the mailbox was full: %v; want ErrOverloaded and context.Canceled", err)
	}
	close(clk.release)
	for _, f := range []*flux.Future{first, second} {
		if d, err := f.Wait(t.Context()); err != nil || !d.Allowed {
			t.Fatalf("queued checks after release: %+v %v", d, err)
		}
	}
	// With a configured wait, a full mailbox fails with ErrOverloaded alone.
	clk2 := &blockingClock{entered: make(chan struct{}), release: make(chan struct{})}
	l2, _ := flux.New(flux.Limit{Rate: 1}, flux.WithClock(clk2), flux.WithShards(1), flux.WithMailbox(1),
		flux.WithOverloadWait(10*time.Millisecond))
	defer l2.Close()
	clk2.armed.Store(true)
	f := l2.CheckAsync(t.Context(), "a")
	<-clk2.entered
	_ = l2.CheckAsync(t.Context(), "b")
	if _, err := l2.Check(t.Context(), "c"); !errors.Is(err, flux.ErrOverloaded) {
		t.Fatalf("full mailbox past the overload wait: %v", err)
	}
	close(clk2.release)
	f.Wait(t.Context())
}

func TestHandlerPanicIsContained(t *testing.T) {
	var once atomic.Bool
	clk := clock.Func(func() (int64, error) {
		if once.CompareAndSwap(false, true) {
			panic("injected")
		}
		return t0.UnixNano(), nil
	})
	l, err := flux.New(flux.Limit{Rate: 10, Burst: 1}, flux.WithClock(clk), flux.WithShards(1))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Check(t.Context(), "a"); !errors.Is(err, flux.ErrPanic) {
		t.Fatalf("first check: %v; want ErrPanic", err)
	}
	for _, k := range []string{"a", "b", "a"} {
		if d, err := l.Check(t.Context(), k); err != nil || !d.Allowed {
			t.Fatalf("after the panic, %s: %+v %v", k, d, err)
		}
	}
	if st := l.Stats(); st[0].Panics != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// SetLimit while checks are in flight: every check gets a decision under one
// limit or the other, and afterwards every key is under the new limit.
func TestSetLimitUnderLoad(t *testing.T) {
	l, clk := newLimiter(t, flux.Limit{Rate: 100, Burst: 99}, flux.WithShards(4))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var errCount atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d, err := l.Check(context.Background(), fmt.Sprintf("k%d-%d", w, i%50))
				if err != nil || (d.Limit != 100 && d.Limit != 5) {
					errCount.Add(1)
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	if err := l.SetLimit(t.Context(), flux.Limit{Rate: 1, Burst: 4}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	if errCount.Load() != 0 {
		t.Fatalf("%d checks failed or saw a limit that was never set", errCount.Load())
	}
	if got := l.Limit(); got != (flux.Limit{Rate: 1, Burst: 4}) {
		t.Fatalf("Limit() = %+v", got)
	}
	// Every key used far more than 5: all are throttled under the new limit.
	for w := range 4 {
		if d := check(t, l, fmt.Sprintf("k%d-0", w), 1); d.Allowed || d.Limit != 5 {
			t.Fatalf("after SetLimit a busy key got %+v", d)
		}
	}
	if _, err := l.CheckN(t.Context(), "fresh", 6); !errors.Is(err, flux.ErrCostExceedsCapacity) {
		t.Fatalf("cost 6 under capacity 5: %v", err)
	}
	clk.Advance(5 * time.Second)
	if d := check(t, l, "k0-0", 5); !d.Allowed {
		t.Fatalf("after the new limit refilled: %+v", d)
	}
	if err := l.SetLimit(t.Context(), flux.Limit{Rate: -1}); !errors.Is(err, flux.ErrInvalidLimit) {
		t.Fatalf("invalid SetLimit: %v", err)
	}
}

func TestCleanupAndMaxKeys(t *testing.T) {
	l, clk := newLimiter(t, flux.Limit{Rate: 1, Burst: 0}, flux.WithShards(2), flux.WithMaxKeys(20), flux.WithSweep(-1, 1))
	for i := range 10 {
		check(t, l, fmt.Sprintf("k%d", i), 1)
	}
	if l.Len() != 10 {
		t.Fatalf("Len %d", l.Len())
	}
	if n, err := l.Cleanup(t.Context(), 0); err != nil || n != 0 {
		t.Fatalf("cleanup of throttled keys removed %d (%v)", n, err)
	}
	clk.Advance(time.Second) // idle now, but not for long
	if n, err := l.Cleanup(t.Context(), time.Minute); err != nil || n != 0 {
		t.Fatalf("cleanup with staleAfter 1m removed %d (%v)", n, err)
	}
	clk.Advance(time.Minute)
	check(t, l, "k0", 1) // k0 is busy again
	n, err := l.CleanupAsync(t.Context(), time.Minute).Wait(t.Context())
	if err != nil || n != 9 || l.Len() != 1 {
		t.Fatalf("cleanup removed %d (%v), %d left", n, err, l.Len())
	}
	if d := check(t, l, "k0", 1); d.Allowed {
		t.Fatal("cleanup forgave a throttled key")
	}
	// Fill to the cap with throttled keys: new keys are refused, none forgiven.
	refused := 0
	for i := range 100 {
		_, err := l.Check(t.Context(), fmt.Sprintf("n%d", i))
		if errors.Is(err, flux.ErrFull) {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if refused == 0 || l.Len() > 20 {
		t.Fatalf("refused %d, holding %d (cap 20)", refused, l.Len())
	}
	if d := check(t, l, "k0", 1); d.Allowed {
		t.Fatal("the memory cap forgave a throttled key")
	}
}

func TestApplySnapshotRestore(t *testing.T) {
	a, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 2})
	b, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 2})
	check(t, a, "x", 2)
	if err := b.Apply(t.Context(), []flux.Update{{Key: "x", At: t0.UnixNano(), Cost: 2}}); err != nil {
		t.Fatal(err)
	}
	if da, db := check(t, a, "x", 0), check(t, b, "x", 0); da != db {
		t.Fatalf("after Apply: %+v vs %+v", da, db)
	}
	var be *flux.BatchError
	if err := b.Apply(t.Context(), []flux.Update{{Key: "ok", Cost: 1}, {Key: "", Cost: 1}}); !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("Apply with an empty key: %v", err)
	}
	snap, err := a.Snapshot(t.Context())
	if err != nil || len(snap) != 1 || snap[0].Key != "x" {
		t.Fatalf("snapshot %+v %v", snap, err)
	}
	c, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 2})
	if err := c.Restore(t.Context(), snap); err != nil {
		t.Fatal(err)
	}
	if da, dc := check(t, a, "x", 0), check(t, c, "x", 0); da != dc {
		t.Fatalf("after Restore: %+v vs %+v", da, dc)
	}
	if err := c.Restore(t.Context(), []flux.KeyState{{Key: "y", State: []byte{1}}}); !errors.Is(err, flux.ErrInvalidState) {
		t.Fatalf("Restore of a bad state: %v", err)
	}
}

func TestAsync(t *testing.T) {
	l, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 9})
	futures := make([]*flux.Future, 12)
	for i := range futures {
		futures[i] = l.CheckAsync(t.Context(), "k")
	}
	allowed := 0
	for _, f := range futures {
		d, err := f.Wait(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if d2, _ := f.Wait(t.Context()); d2 != d {
			t.Fatal("second Wait differs")
		}
		if d.Allowed {
			allowed++
		}
	}
	if allowed != 10 {
		t.Fatalf("%d of 12 async checks admitted; want 10", allowed)
	}
	if _, err := l.CheckAsync(t.Context(), "").Wait(t.Context()); !errors.Is(err, flux.ErrEmptyKey) {
		t.Fatalf("async empty key: %v", err)
	}
	reqs := []flux.Request{{Key: "a", Cost: 3}, {Key: "b", Cost: 1}, {Key: "a", Cost: 7}, {Key: "a", Cost: 1}}
	bf := l.CheckBatchAsync(t.Context(), reqs)
	reqs[0].Key = "mutated" // the future copied reqs
	out, err := bf.Wait(t.Context())
	if err != nil || len(out) != 4 || !out[0].Allowed || !out[1].Allowed || !out[2].Allowed || out[3].Allowed {
		t.Fatalf("batch future: %+v %v", out, err)
	}
	var be *flux.BatchError
	if _, err := l.CheckBatchAsync(t.Context(), []flux.Request{{Key: "a", Cost: 1}, {Key: "", Cost: 1}}).Wait(t.Context()); !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("invalid async batch: %v", err)
	}
}
