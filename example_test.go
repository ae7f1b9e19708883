package flux_test

import (
	"context"
	"fmt"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
)

// Hooks run in the caller's goroutine around every check: here they count
// denials and report errors. A hook must never use the key as a metric
// label: keys are unbounded and chosen by clients.
func ExampleWithHooks() {
	denied := 0
	hooks := flux.Hooks{
		BeforeCheck: func(ctx context.Context, key string, cost int) {
			fmt.Printf("checking %s (cost %d)\n", key, cost)
		},
		AfterCheck: func(ctx context.Context, key string, cost int, d flux.Decision, latency time.Duration) {
			if !d.Allowed {
				denied++
				fmt.Printf("denied %s, retry after %v\n", key, d.RetryAfter)
			}
		},
		OnError: func(ctx context.Context, key string, cost int, err error, latency time.Duration) {
			fmt.Printf("error for %q: %v\n", key, err)
		},
	}
	clk := clock.NewManual(time.Unix(0, 0))
	l, err := flux.New(flux.Limit{Rate: 1, Burst: 1}, flux.WithClock(clk), flux.WithHooks(hooks))
	if err != nil {
		panic(err)
	}
	defer l.Close()

	ctx := context.Background()
	for range 3 {
		l.Check(ctx, "alice")
	}
	l.Check(ctx, "")
	fmt.Println("denied:", denied)
	// Output:
	// checking alice (cost 1)
	// checking alice (cost 1)
	// checking alice (cost 1)
	// denied alice, retry after 1s
	// checking  (cost 1)
	// error for "": flux: empty key
	// denied: 1
}
