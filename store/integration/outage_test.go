package integration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/failure"
	"github.com/fluxlimiter/flux/internal/faultproxy"
	"github.com/fluxlimiter/flux/internal/storeenv"
	"github.com/fluxlimiter/flux/store"
)

// outageLoad is a steady load of single checks on many keys far below
// their limit, as honest users make: rate checks per second spread evenly
// over keys, sent by a pool of workers, every check recorded.
type outageLoad struct {
	l     *flux.Limiter
	keys  int
	rate  int
	start time.Time // records are timed from here

	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	recs []outageRec
}

type outageRec struct {
	at      time.Duration // when the check was sent, since start
	took    time.Duration
	allowed bool
	policy  bool // denied by the failure policy (its RetryAfter), not by the limit
	err     error
}

const outageRetryAfter = 7 * time.Second // tells a policy denial from a limit's

func startOutageLoad(l *flux.Limiter, keys, rate, workers int) *outageLoad {
	ld := &outageLoad{l: l, keys: keys, rate: rate, start: time.Now(), stop: make(chan struct{})}
	next := make(chan int, 4*workers)
	ld.wg.Go(func() {
		defer close(next)
		const tick = 5 * time.Millisecond
		per := rate * int(tick) / int(time.Second)
		t := time.NewTicker(tick)
		defer t.Stop()
		k := 0
		for {
			select {
			case <-ld.stop:
				return
			case <-t.C:
			}
			for range per {
				select {
				case next <- k % keys:
				default: // every worker busy: the check is not sent
				}
				k++
			}
		}
	})
	for range workers {
		ld.wg.Go(func() {
			var mine []outageRec
			for k := range next {
				key := fmt.Sprintf("user-%04d", k)
				t0 := time.Now()
				d, err := l.Check(context.Background(), key)
				mine = append(mine, outageRec{
					at: t0.Sub(ld.start), took: time.Since(t0), allowed: d.Allowed,
					policy: !d.Allowed && d.RetryAfter == outageRetryAfter, err: err,
				})
			}
			ld.mu.Lock()
			ld.recs = append(ld.recs, mine...)
			ld.mu.Unlock()
		})
	}
	return ld
}

func (ld *outageLoad) since() time.Duration { return time.Since(ld.start) }

func (ld *outageLoad) finish() []outageRec {
	close(ld.stop)
	ld.wg.Wait()
	slices.SortFunc(ld.recs, func(a, b outageRec) int { return int(a.at - b.at) })
	return ld.recs
}

// window sums the checks sent in [from, to).
type window struct {
	sent, admitted, policy, errs int
	p99, max                     time.Duration
}

func summarize(recs []outageRec, from, to time.Duration) window {
	var w window
	var took []time.Duration
	for _, r := range recs {
		if r.at < from || r.at >= to {
			continue
		}
		w.sent++
		if r.err != nil {
			w.errs++
		}
		if r.allowed {
			w.admitted++
		}
		if r.policy {
			w.policy++
		}
		took = append(took, r.took)
	}
	if len(took) > 0 {
		slices.Sort(took)
		w.p99 = took[len(took)*99/100]
		w.max = took[len(took)-1]
	}
	return w
}

func (w window) String() string {
	return fmt.Sprintf("%4d/%4d admitted (%4d by the policy), p99 %v, max %v", w.admitted, w.sent, w.policy, w.p99.Round(100*time.Microsecond), w.max.Round(100*time.Microsecond))
}

// The store goes down (Redis behind a proxy that refuses or hangs; the
// real server keeps running) under a steady load of honest users, 300
// keys far below their limit, checked about three times a second each,
// while the sweep forgets every key a moment after its check. Per second
// of the outage: local decides every key from memory and admits them all
// (it has decided each of them since it started), open admits all, closed
// admits none once the keys held at the cut are swept. No decision waits
// for the store once it is known down: the store is probed once per flush
// interval, not once per request. Saving resumes when the store is back.
func TestOutageAtLoad(t *testing.T) {
	b, ok := redisBackend(t)
	if !ok {
		t.Skip("needs Redis: " + storeenv.Redis)
	}
	const (
		keys     = 300
		rate     = 1000 // checks per second, all keys together
		workers  = 32
		shards   = 2
		flush    = 100 * time.Millisecond
		warm     = time.Second
		outage   = 3 * time.Second
		recovery = 1500 * time.Millisecond
	)
	for _, tc := range []struct {
		policy  failure.Policy
		through bool
		cut     string
	}{
		{failure.Local, false, "refuse"},
		{failure.Local, true, "hang"},
		{failure.Open, false, "hang"},
		{failure.Open, true, "refuse"},
		{failure.Closed, false, "refuse"},
		{failure.Closed, true, "hang"},
	} {
		mode := "behind"
		if tc.through {
			mode = "through"
		}
		t.Run(fmt.Sprintf("%v/%s/%s", tc.policy, mode, tc.cut), func(t *testing.T) {
			proxy := faultproxy.Start(t, b.addr)
			clk := clock.NewSystem()
			st := b.open(t, proxy.Addr(), clk)
			direct := b.open(t, "", clk)
			ns := fmt.Sprintf("outage-%v-%s", tc.policy, mode)
			// Capacity 1000 at 1000/s: an honest key (3 checks/s) is idle
			// a millisecond after each check, so the sweep (every 100 ms)
			// forgets it between two of its checks.
			lim := flux.Limit{Rate: 1000, Burst: 999}
			const timeout = 50 * time.Millisecond
			l := newLimiter(t, lim, flux.WithClock(clk), flux.WithShards(shards),
				flux.WithSweep(100*time.Millisecond, 1024),
				flux.WithStore(flux.StoreConfig{
					Store: st, Limiter: ns, Mode: writeMode(tc.through), FlushEvery: flush,
					Timeout: timeout, OnFailure: tc.policy, RetryAfter: outageRetryAfter,
				}))

			// Every user has been served once with the store up. (On a
			// loaded machine a load may exceed the timeout even then: the
			// policy decides that request, so try again.)
			deadline := time.Now().Add(10 * time.Second)
			for k := 0; k < keys; {
				d, err := l.Check(t.Context(), fmt.Sprintf("user-%04d", k))
				if err != nil {
					t.Fatal(err)
				}
				if d.Allowed {
					k++
				} else if time.Now().After(deadline) {
					t.Fatalf("user-%04d not admitted with the store up: %+v", k, d)
				}
			}
			ld := startOutageLoad(l, keys, rate, workers)
			time.Sleep(warm)
			cutAt := ld.since()
			if tc.cut == "hang" {
				proxy.Hang()
			} else {
				proxy.Refuse()
			}
			// Store calls made once the outage is known (a flush interval
			// and a timeout after the cut, with slack for a loaded machine).
			time.Sleep(300 * time.Millisecond)
			before := storeTotals(l)
			time.Sleep(outage - 300*time.Millisecond)
			during := storeTotals(l)
			restoreAt := ld.since()
			proxy.Restore()
			time.Sleep(recovery)
			recs := ld.finish()

			warmW := summarize(recs, cutAt-500*time.Millisecond, cutAt)
			t.Logf("before the cut  %v", warmW)
			var outW []window
			for s := time.Duration(0); s < outage/time.Second; s++ {
				w := summarize(recs, cutAt+s*time.Second, min(cutAt+(s+1)*time.Second, restoreAt))
				outW = append(outW, w)
				t.Logf("outage second %d %v", s, w)
			}
			backW := summarize(recs, restoreAt+500*time.Millisecond, restoreAt+recovery)
			t.Logf("store back      %v", backW)
			all := summarize(recs, 0, time.Hour)
			t.Logf("store calls failed while known down: %d loads, %d saves; stats at the end %+v",
				during.LoadErrors-before.LoadErrors, during.SaveErrors-before.SaveErrors, storeTotals(l))

			if all.errs > 0 {
				for _, r := range recs {
					if r.err != nil {
						t.Fatalf("%d checks failed, first at %v: %v", all.errs, r.at, r.err)
					}
				}
			}
			// With the store up, closed denies the requests whose store call
			// was too slow (a loaded machine, -race): only local and open
			// must admit every honest request whatever the store does.
			honest := func(w window) bool {
				if tc.policy == failure.Closed {
					return w.admitted > 0 && w.admitted+w.policy == w.sent
				}
				return w.admitted == w.sent
			}
			// A machine shared with other work may stall this process for a
			// while, so no window is required to hold checks; the run as a
			// whole must.
			if !honest(warmW) {
				t.Fatalf("before the cut: %v; want the honest load admitted", warmW)
			}
			for s, w := range outW {
				switch {
				case tc.policy != failure.Closed:
					// local: every key was decided here since the limiter
					// started and none is near its limit; open: all.
					if w.admitted != w.sent {
						t.Errorf("%v: outage second %d: %v; want every honest check admitted", tc.policy, s, w)
					}
				case tc.through || s > 0:
					// Closed denies every check that needs the store; under
					// write-behind the keys held at the cut are decided from
					// memory until the sweep forgets them.
					if w.admitted != 0 {
						t.Errorf("closed: outage second %d: %v; want none admitted", s, w)
					}
				}
			}
			if sent := summarize(recs, cutAt, restoreAt).sent; sent < rate/4*int(outage/time.Second) {
				t.Errorf("only %d checks sent during the %v outage (target %d/s)", sent, outage, rate)
			}
			if !honest(backW) {
				t.Errorf("store back: %v; want every honest check admitted", backW)
			}
			// The bound holds by design: once the store is known down, it
			// is probed at most once per flush interval per shard, so no
			// request waits for it.
			probes := uint64(shards) * uint64((outage-300*time.Millisecond)/flush+2)
			if n := (during.LoadErrors - before.LoadErrors) + (during.SaveErrors - before.SaveErrors); n > probes {
				t.Errorf("%d store calls failed while the store was known down; want at most %d probes", n, probes)
			}
			if outMax := slices.MaxFunc(outW, func(a, b window) int { return int(a.max - b.max) }).max; outMax > time.Second {
				t.Errorf("a decision took %v during the outage", outMax)
			}

			// Saving resumes: a key spent now (its state is idle a second
			// later, then no longer saved) reaches the store. It is spent
			// again while the store does not have it, in case the store
			// was found slow (down) again meanwhile on a loaded machine.
			deadline = time.Now().Add(10 * time.Second)
			for {
				if _, err := l.CheckN(t.Context(), "spent-after", 1000); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * flush)
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				e, found, err := direct.Load(ctx, ns, "spent-after")
				cancel()
				if err == nil && found && e.IdleAt != store.NoExpiry {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("saving did not resume once the store was back: %+v %v %v; stats %+v", e, found, err, storeTotals(l))
				}
			}
		})
	}
}
