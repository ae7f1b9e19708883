// Package fluxtest is the test kit of Flux's own tests: the helpers every
// package's tests would otherwise write again. It is internal so that it
// can change with the tests that use it.
package fluxtest

import (
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
)

// T0 is where the manual clocks of New start: a fixed, recent instant, so
// that failures are reproducible and times in messages are readable.
var T0 = time.Unix(1_700_000_000, 0)

// Start returns a limiter made by flux.New(lim, opts...), failing the test
// if New fails, and closes it when the test ends.
func Start(t testing.TB, lim flux.Limit, opts ...flux.Option) *flux.Limiter {
	t.Helper()
	l, err := flux.New(lim, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// New is Start with a manual clock at T0, which it returns so the test can
// move time. A WithClock among opts replaces it (later options win).
func New(t testing.TB, lim flux.Limit, opts ...flux.Option) (*flux.Limiter, *clock.Manual) {
	t.Helper()
	clk := clock.NewManual(T0)
	return Start(t, lim, append([]flux.Option{flux.WithClock(clk)}, opts...)...), clk
}
