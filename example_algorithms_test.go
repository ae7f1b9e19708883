package flux_test

import (
	"context"
	"fmt"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
)

// run checks key n times at each of the given instants (offsets from the
// start) and prints what each check got.
func run(lim flux.Limit, at []time.Duration, n int) {
	start := time.Unix(0, 0)
	clk := clock.NewManual(start)
	l, err := flux.New(lim, flux.WithClock(clk))
	if err != nil {
		panic(err)
	}
	defer l.Close()
	for _, t := range at {
		clk.Set(start.Add(t))
		for range n {
			d, err := l.Check(context.Background(), "k")
			if err != nil {
				panic(err)
			}
			fmt.Printf("t=%v allowed=%v remaining=%d retry=%v delay=%v\n", t, d.Allowed, d.Remaining, d.RetryAfter, d.Delay)
		}
	}
}

// A token bucket of Burst+1 tokens refilled at Rate per second admits what
// GCRA admits with the same Rate and Burst.
func ExampleAlgorithm_tokenBucket() {
	run(flux.Limit{Algorithm: flux.TokenBucket, Rate: 2, Burst: 1}, []time.Duration{0, 500 * time.Millisecond}, 3)
	// Output:
	// t=0s allowed=true remaining=1 retry=0s delay=0s
	// t=0s allowed=true remaining=0 retry=0s delay=0s
	// t=0s allowed=false remaining=0 retry=500ms delay=0s
	// t=500ms allowed=true remaining=0 retry=0s delay=0s
	// t=500ms allowed=false remaining=0 retry=500ms delay=0s
	// t=500ms allowed=false remaining=0 retry=500ms delay=0s
}

// A leaky bucket paces what it admits: Delay says how long to wait before
// acting, so that admitted requests leave at exactly Rate.
func ExampleAlgorithm_leakyBucket() {
	run(flux.Limit{Algorithm: flux.LeakyBucket, Rate: 2, Burst: 2}, []time.Duration{0}, 4)
	// Output:
	// t=0s allowed=true remaining=2 retry=0s delay=0s
	// t=0s allowed=true remaining=1 retry=0s delay=500ms
	// t=0s allowed=true remaining=0 retry=0s delay=1s
	// t=0s allowed=false remaining=0 retry=500ms delay=0s
}

// A sliding window log admits at most Requests in any Window, exactly.
func ExampleAlgorithm_slidingWindowLog() {
	run(flux.Limit{Algorithm: flux.SlidingWindowLog, Requests: 2, Window: time.Second},
		[]time.Duration{0, 600 * time.Millisecond, 900 * time.Millisecond, 1000 * time.Millisecond, 1100 * time.Millisecond}, 1)
	// Output:
	// t=0s allowed=true remaining=1 retry=0s delay=0s
	// t=600ms allowed=true remaining=0 retry=0s delay=0s
	// t=900ms allowed=false remaining=0 retry=100ms delay=0s
	// t=1s allowed=true remaining=0 retry=0s delay=0s
	// t=1.1s allowed=false remaining=0 retry=500ms delay=0s
}

// A sliding window approximates the log with two counters per key: the
// previous window's count weighs in proportion to its overlap.
func ExampleAlgorithm_slidingWindow() {
	run(flux.Limit{Algorithm: flux.SlidingWindow, Requests: 2, Window: time.Second},
		[]time.Duration{0, 1500 * time.Millisecond}, 2)
	// Output:
	// t=0s allowed=true remaining=1 retry=0s delay=0s
	// t=0s allowed=true remaining=0 retry=0s delay=0s
	// t=1.5s allowed=true remaining=0 retry=0s delay=0s
	// t=1.5s allowed=false remaining=0 retry=500ms delay=0s
}

// A fixed window admits Requests per window; windows are aligned to the
// Unix epoch (or to calendar units with Calendar).
func ExampleAlgorithm_fixedWindow() {
	run(flux.Limit{Algorithm: flux.FixedWindow, Requests: 2, Window: time.Second},
		[]time.Duration{900 * time.Millisecond, 1000 * time.Millisecond}, 3)
	// Output:
	// t=900ms allowed=true remaining=1 retry=0s delay=0s
	// t=900ms allowed=true remaining=0 retry=0s delay=0s
	// t=900ms allowed=false remaining=0 retry=100ms delay=0s
	// t=1s allowed=true remaining=1 retry=0s delay=0s
	// t=1s allowed=true remaining=0 retry=0s delay=0s
	// t=1s allowed=false remaining=0 retry=1s delay=0s
}

// GCRA, the default (Algorithm ""), admits Burst+1 requests at once after
// idle, then one every 1/Rate seconds; RetryAfter is exact, rounded up.
func ExampleAlgorithm() {
	run(flux.Limit{Rate: 4, Burst: 1}, []time.Duration{0, 100 * time.Millisecond, 250 * time.Millisecond}, 2)
	// Output:
	// t=0s allowed=true remaining=1 retry=0s delay=0s
	// t=0s allowed=true remaining=0 retry=0s delay=0s
	// t=100ms allowed=false remaining=0 retry=150ms delay=0s
	// t=100ms allowed=false remaining=0 retry=150ms delay=0s
	// t=250ms allowed=true remaining=0 retry=0s delay=0s
	// t=250ms allowed=false remaining=0 retry=250ms delay=0s
}
