package flux_test

import (
	"context"
	"fmt"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/store/memstore"
)

// A limit of 2 requests per second with a burst of 1 admits 2 requests at
// once, then one every 500 ms. The manual clock makes the example
// deterministic; a real program leaves WithClock out.
func ExampleNew() {
	clk := clock.NewManual(time.Unix(0, 0))
	l, err := flux.New(flux.Limit{Rate: 2, Burst: 1}, flux.WithClock(clk))
	if err != nil {
		panic(err)
	}
	defer l.Close()

	ctx := context.Background()
	for range 3 {
		d, err := l.Check(ctx, "alice")
		if err != nil {
			panic(err)
		}
		fmt.Printf("allowed=%v remaining=%d retry after %v\n", d.Allowed, d.Remaining, d.RetryAfter)
	}
	clk.Advance(500 * time.Millisecond)
	d, _ := l.Check(ctx, "alice")
	fmt.Println("500ms later: allowed =", d.Allowed)
	// Output:
	// allowed=true remaining=1 retry after 0s
	// allowed=true remaining=0 retry after 0s
	// allowed=false remaining=0 retry after 500ms
	// 500ms later: allowed = true
}

// CheckBatch decides many requests with one message per shard. An unset
// Cost means 1; Peek asks without consuming.
func ExampleLimiter_CheckBatch() {
	l, err := flux.New(flux.Limit{Rate: 1, Burst: 1}, flux.WithClock(clock.NewManual(time.Unix(0, 0))))
	if err != nil {
		panic(err)
	}
	defer l.Close()

	reqs := []flux.Request{
		{Key: "alice"},
		{Key: "bob", Cost: 2},
		{Key: "alice"},
		{Key: "alice"},
		{Key: "bob", Peek: true},
	}
	out := make([]flux.Decision, len(reqs))
	if err := l.CheckBatch(context.Background(), reqs, out); err != nil {
		panic(err)
	}
	for i, d := range out {
		fmt.Printf("%s: allowed=%v remaining=%d\n", reqs[i].Key, d.Allowed, d.Remaining)
	}
	// Output:
	// alice: allowed=true remaining=1
	// bob: allowed=true remaining=0
	// alice: allowed=true remaining=0
	// alice: allowed=false remaining=0
	// bob: allowed=false remaining=0
}

// CheckEach answers each item on its own: an invalid item gets its error
// and the others are still decided.
func ExampleLimiter_CheckEach() {
	l, err := flux.New(flux.Limit{Rate: 1, Burst: 1}, flux.WithClock(clock.NewManual(time.Unix(0, 0))))
	if err != nil {
		panic(err)
	}
	defer l.Close()

	reqs := []flux.Request{{Key: "alice"}, {Key: ""}, {Key: "bob", Cost: 5}, {Key: "bob"}}
	out := make([]flux.Decision, len(reqs))
	errs := make([]error, len(reqs))
	if err := l.CheckEach(context.Background(), reqs, out, errs); err != nil {
		panic(err)
	}
	for i := range reqs {
		if errs[i] != nil {
			fmt.Printf("%d: %v\n", i, errs[i])
			continue
		}
		fmt.Printf("%d: allowed=%v\n", i, out[i].Allowed)
	}
	// Output:
	// 0: allowed=true
	// 1: flux: empty key
	// 2: flux: cost exceeds capacity: cost 5, capacity 2
	// 3: allowed=true
}

// CheckAsync sends checks without waiting, so one goroutine keeps many in
// flight; Wait collects each answer.
func ExampleLimiter_CheckAsync() {
	l, err := flux.New(flux.Limit{Rate: 1, Burst: 2}, flux.WithClock(clock.NewManual(time.Unix(0, 0))))
	if err != nil {
		panic(err)
	}
	defer l.Close()

	ctx := context.Background()
	var futures []*flux.Future
	for range 4 {
		futures = append(futures, l.CheckAsync(ctx, "alice"))
	}
	for i, f := range futures {
		d, err := f.Wait(ctx)
		if err != nil {
			panic(err)
		}
		fmt.Printf("check %d: allowed=%v\n", i, d.Allowed)
	}
	// Output:
	// check 0: allowed=true
	// check 1: allowed=true
	// check 2: allowed=true
	// check 3: allowed=false
}

// WithStore keeps the state in a store, so that it survives a restart:
// the second limiter, on the same store and namespace, starts where the
// first stopped.
func ExampleWithStore() {
	clk := clock.NewManual(time.Unix(0, 0))
	st := memstore.New(memstore.Options{})
	cfg := flux.StoreConfig{Store: st, Limiter: "api", Mode: flux.StoreWriteThrough}
	ctx := context.Background()

	first, err := flux.New(flux.Limit{Rate: 1, Burst: 1}, flux.WithClock(clk), flux.WithStore(cfg))
	if err != nil {
		panic(err)
	}
	for range 2 {
		first.Check(ctx, "alice")
	}
	first.Close()

	restarted, err := flux.New(flux.Limit{Rate: 1, Burst: 1}, flux.WithClock(clk), flux.WithStore(cfg))
	if err != nil {
		panic(err)
	}
	defer restarted.Close()
	d, _ := restarted.Check(ctx, "alice")
	fmt.Println("after the restart: allowed =", d.Allowed)
	// Output:
	// after the restart: allowed = false
}
