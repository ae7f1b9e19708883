package flux_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
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

// Middleware wraps each check. This one normalises keys, exempts an
// allowlisted key without consulting the limiter, and logs denials.
func ExampleWithMiddleware() {
	normalise := func(next flux.CheckFunc) flux.CheckFunc {
		return func(ctx context.Context, key string, cost int) (flux.Decision, error) {
			return next(ctx, strings.ToLower(strings.TrimSpace(key)), cost)
		}
	}
	allowlist := func(next flux.CheckFunc) flux.CheckFunc {
		return func(ctx context.Context, key string, cost int) (flux.Decision, error) {
			if key == "healthcheck" {
				return flux.Decision{Allowed: true}, nil
			}
			return next(ctx, key, cost)
		}
	}
	logDenials := func(next flux.CheckFunc) flux.CheckFunc {
		return func(ctx context.Context, key string, cost int) (flux.Decision, error) {
			d, err := next(ctx, key, cost)
			if err == nil && !d.Allowed {
				fmt.Printf("denied %s\n", key)
			}
			return d, err
		}
	}
	clk := clock.NewManual(time.Unix(0, 0))
	l, err := flux.New(flux.Limit{Rate: 1},
		flux.WithClock(clk),
		flux.WithMiddleware(normalise), // outermost: runs first
		flux.WithMiddleware(allowlist),
		flux.WithMiddleware(logDenials), // innermost: sees the limiter's answer
	)
	if err != nil {
		panic(err)
	}
	defer l.Close()

	ctx := context.Background()
	for _, key := range []string{"Bob", " bob ", "healthcheck", "HealthCheck"} {
		d, err := l.Check(ctx, key)
		if err != nil && !errors.Is(err, flux.ErrClosed) {
			panic(err)
		}
		fmt.Printf("%q allowed=%v\n", key, d.Allowed)
	}
	// Output:
	// "Bob" allowed=true
	// denied bob
	// " bob " allowed=false
	// "healthcheck" allowed=true
	// "HealthCheck" allowed=true
}
