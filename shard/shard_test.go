package shard

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/internal/errs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func gcra(t testing.TB, rate, burst float64) algorithm.GCRA {
	g, err := algorithm.NewGCRA(rate, burst)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// The sweep visits at most SweepBudget keys per tick, resumes where it
// stopped, and removes only idle keys.
func TestSweepIsIncrementalAndLossless(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := clock.Func(func() (int64, error) { return time.Now().UnixNano(), nil }) // synctest's fake time
		s := New(Config[int64]{Algorithm: gcra(t, 1, 0), Clock: clk, SweepEvery: time.Second, SweepBudget: 100})
		defer s.Stop()
		ctx := context.Background()
		for i := range 1000 {
			if _, err := s.Check(ctx, fmt.Sprintf("k%d", i), 1); err != nil {
				t.Fatal(err)
			}
		}
		if s.Len() != 1000 {
			t.Fatalf("Len %d", s.Len())
		}
		// One key stays throttled for a long time: rate 1/s, it used 1 at t0;
		// keep it busy so its TAT is always in the future.
		time.Sleep(1500 * time.Millisecond) // every key idle now; one tick has run
		synctest.Wait()
		if got := s.Stats().Swept; got != 100 {
			t.Fatalf("after one tick %d keys swept; want exactly the budget, 100", got)
		}
		if _, err := s.Check(ctx, "hot", 1); err != nil {
			t.Fatal(err)
		}
		for range 10 {
			time.Sleep(time.Second)
			synctest.Wait()
			if d, _ := s.Check(ctx, "hot", 1); !d.Allowed {
				t.Fatal("hot key denied at 1/s")
			}
		}
		if s.Len() != 1 {
			t.Fatalf("after 11 ticks of 100: %d keys left; want only the hot key", s.Len())
		}
		d, err := s.Check(ctx, "hot", 1)
		if err != nil || d.Allowed {
			t.Fatalf("hot key was forgotten by the sweep: %+v %v", d, err)
		}
	})
}

func TestMaxKeysEvictsIdleAndNeverForgives(t *testing.T) {
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	s := New(Config[int64]{Algorithm: gcra(t, 1, 0), Clock: clk, MaxKeys: 3, SweepEvery: -1})
	defer s.Stop()
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c"} {
		if d, err := s.Check(ctx, k, 1); err != nil || !d.Allowed {
			t.Fatalf("%s: %+v %v", k, d, err)
		}
	}
	// All three are throttled (rate 1/s, burst 0): a fourth key is refused.
	_, err := s.Check(ctx, "d", 1)
	if !errors.Is(err, errs.Full) {
		t.Fatalf("fourth key while all are throttled: %v; want ErrFull", err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if d, _ := s.Check(ctx, k, 1); d.Allowed {
			t.Fatalf("%s was forgiven", k)
		}
	}
	// Peeking an unknown key stores nothing and needs no room.
	if d, err := s.Check(ctx, "d", 0); err != nil || !d.Allowed {
		t.Fatalf("peek on a full shard: %+v %v", d, err)
	}
	clk.Advance(time.Second) // all idle
	if d, err := s.Check(ctx, "d", 1); err != nil || !d.Allowed {
		t.Fatalf("new key once others are idle: %+v %v", d, err)
	}
	st := s.Stats()
	if st.Evicted == 0 || st.Refused != 1 || s.Len() > 3 {
		t.Fatalf("stats %+v len %d", st, s.Len())
	}
}

func TestBatchApplyCleanupSnapshot(t *testing.T) {
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	s := New(Config[int64]{Algorithm: gcra(t, 10, 1), Clock: clk, SweepEvery: -1})
	defer s.Stop()
	ctx := context.Background()
	b := &Batch{
		Items: []Item{{Key: "x", Cost: 2}, {Key: "x", Cost: 1}, {Key: "y", Cost: 1}},
		Out:   make([]algorithm.Decision, 3),
		Done:  make(chan *Batch, 1),
	}
	if err := s.SendBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	<-b.Done
	if b.Err != nil || !b.Out[0].Allowed || b.Out[1].Allowed || !b.Out[2].Allowed {
		t.Fatalf("batch: %+v %v", b.Out, b.Err)
	}
	// A remote admission of 2 for z makes z throttled without a decision here.
	now, _ := clk.Now()
	ap := &Batch{Items: []Item{{Key: "z", Cost: 2, At: now}}, Done: make(chan *Batch, 1)}
	if err := s.SendApply(ctx, ap); err != nil {
		t.Fatal(err)
	}
	<-ap.Done
	if d, _ := s.Check(ctx, "z", 1); d.Allowed {
		t.Fatalf("z after a remote admission of its whole capacity: %+v", d)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil || len(snap) != 3 {
		t.Fatalf("snapshot: %v %v", snap, err)
	}
	// Cleanup with staleAfter 1s removes nothing until keys are idle for 1s.
	if n, done, err := s.CleanupStep(ctx, time.Second, 2, true); err != nil || n != 0 || done {
		t.Fatalf("cleanup step 1: %d %v %v", n, done, err)
	}
	clk.Advance(2 * time.Second)
	removed := 0
	for start := true; ; start = false {
		n, done, err := s.CleanupStep(ctx, time.Second, 1, start)
		if err != nil {
			t.Fatal(err)
		}
		removed += n
		if done {
			break
		}
	}
	if removed != 3 || s.Len() != 0 {
		t.Fatalf("cleanup removed %d, %d left", removed, s.Len())
	}
	// Restore brings the snapshot back (as of its time: still throttled if the clock goes back).
	clk.Advance(-2 * time.Second)
	if err := s.Restore(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.Check(ctx, "z", 1); d.Allowed {
		t.Fatalf("z after restore: %+v", d)
	}
}

func TestClockFailureAndPanic(t *testing.T) {
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	var boom bool
	c := clock.Func(func() (int64, error) {
		if boom {
			boom = false
			panic("clock exploded")
		}
		return clk.Now()
	})
	s := New(Config[int64]{Algorithm: gcra(t, 10, 1), Clock: c, SweepEvery: -1})
	defer s.Stop()
	ctx := context.Background()
	clk.Fail(errors.New("ntp gone"))
	if _, err := s.Check(ctx, "a", 1); !errors.Is(err, errs.Clock) {
		t.Fatalf("failing clock: %v; want ErrClock", err)
	}
	clk.Recover()
	// boom is only touched on the shard goroutine after this send.
	if err := s.do(ctx, func(*Shard[int64]) error { boom = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Check(ctx, "a", 1); !errors.Is(err, errs.Panic) {
		t.Fatalf("panicking handler: %v; want ErrPanic", err)
	}
	if d, err := s.Check(ctx, "b", 1); err != nil || !d.Allowed {
		t.Fatalf("after a panic: %+v %v", d, err)
	}
	if st := s.Stats(); st.Panics != 1 || st.ClockErrs != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSetAlgorithmRebases(t *testing.T) {
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	s := New(Config[int64]{Algorithm: gcra(t, 10, 9), Clock: clk, SweepEvery: -1})
	defer s.Stop()
	ctx := context.Background()
	for range 10 {
		s.Check(ctx, "k", 1)
	}
	if err := s.SetAlgorithm(ctx, gcra(t, 1, 99)); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Check(ctx, "k", 0)
	if d.Limit != 100 || d.Remaining != 90 {
		t.Fatalf("after raising the burst: %+v; want 10 of 100 used", d)
	}
	if _, err := s.Check(ctx, "k", 101); !errors.Is(err, errs.CostExceedsBurst) {
		t.Fatalf("cost above the new capacity: %v", err)
	}
}

// After a surge of keys is swept, the shard's table gives its memory back
// over the following sweep ticks.
func TestSweepGivesMemoryBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := clock.Func(func() (int64, error) { return time.Now().UnixNano(), nil }) // synctest's fake time
		s := New(Config[int64]{Algorithm: gcra(t, 10, 0), Clock: clk, SweepEvery: time.Second, SweepBudget: 1 << 20})
		defer s.Stop()
		ctx := context.Background()
		const n = 50_000
		items := make([]Request, n)
		for i := range items {
			items[i] = Request{Key: fmt.Sprintf("spray-%d", i), Cost: 1}
		}
		out := make([]algorithm.Decision, n)
		b := &Batch{Reqs: items, Out: out, Done: make(chan *Batch, 1)}
		if err := s.SendBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
		<-b.Done
		if b.Err != nil || s.Len() != n {
			t.Fatalf("batch: %v, %d keys", b.Err, s.Len())
		}
		tableSlots := func() int {
			var got int
			if err := s.do(ctx, func(s *Shard[int64]) error { got = slots(s.m); return nil }); err != nil {
				t.Fatal(err)
			}
			return got
		}
		peak := tableSlots()
		// Every key is idle 100 ms later: the first tick sweeps them all,
		// the following ones compact 16 subtables each.
		time.Sleep(60 * time.Second)
		synctest.Wait()
		if s.Len() != 0 || s.Stats().Swept != n {
			t.Fatalf("%d keys left, %d swept", s.Len(), s.Stats().Swept)
		}
		if after := tableSlots(); after*50 > peak {
			t.Fatalf("table has %d slots after sweeping every key, %d at the peak", after, peak)
		}
	})
}
