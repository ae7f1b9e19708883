// Package gcrastep holds what every store backend's atomic GCRA mode shares:
// argument validation, and turning the store's verdict back into the exact
// algorithm.Decision that algorithm.GCRA.Step gives.
//
// A backend's script or statement only has to implement the admission rule
// and the TAT update; it returns whether it admitted the request and a TAT.
// Decide replays algorithm.GCRA.Step from that TAT, so every Decision field
// is computed by the one implementation in package algorithm, and checks
// that the replay agrees with the store's verdict.
package gcrastep

import (
	"errors"
	"fmt"
	"math"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/internal/errs"
)

// ErrMismatch reports that a store's verdict disagrees with
// algorithm.GCRA.Step for the TAT it returned: a bug, or (PostgreSQL) a
// snapshot that raced with another writer, which the caller retries.
var ErrMismatch = errors.New("flux: store: atomic GCRA verdict disagrees with algorithm.GCRA")

// Args validates g and cost and returns what the in-store step needs:
// nT = cost·T, the emission the request adds, and bound = τ + T. As in
// algorithm.GCRA.Step, a request at now is admitted iff
//
//	next = max(TAT, now) + nT (saturated at MaxInt64) ≤ now + bound
//
// (a missing TAT counts as −∞), and then next becomes the TAT. Both are
// ≥ 0 and at most 2^62, and nT ≤ bound, so a fresh key always admits.
func Args(g algorithm.GCRA, cost int64) (nT, bound int64, err error) {
	if g.Interval() <= 0 {
		return 0, 0, fmt.Errorf("%w: zero algorithm.GCRA (use algorithm.NewGCRA)", errs.InvalidRate)
	}
	if cost < 0 {
		return 0, 0, fmt.Errorf("%w: %d", errs.InvalidCost, cost)
	}
	if cost > g.Capacity() {
		return 0, 0, fmt.Errorf("%w: cost %d, capacity %d", errs.CostExceedsBurst, cost, g.Capacity())
	}
	// cost ≤ capacity = floor(burst)+1 and τ ≥ floor(burst)·T, so
	// nT ≤ τ+T ≤ 2^62 (NewGCRA's bound): no overflow.
	return cost * g.Interval(), g.Tolerance() + g.Interval(), nil
}

// Fresh is the TAT of a key the store holds nothing for.
const Fresh = math.MinInt64

// Decide returns the Decision for a request of cost at now that the store
// admitted (allowed, tat = the TAT it stored) or denied (tat = the TAT it
// left in place, Fresh if none). For cost 0 (a peek) allowed is ignored and
// tat is the stored TAT.
//
// An admitted request's stored TAT is max(old, now) + nT; Step depends on
// old only through max(old, now), so replaying Step from tat − nT gives the
// very Decision Step gave from old (when the addition saturated, any old
// with the same saturated sum gives the same Decision too).
func Decide(g algorithm.GCRA, now, cost int64, allowed bool, tat int64) (algorithm.Decision, error) {
	if cost == 0 {
		_, d, _ := g.Step(tat, now, 0)
		return d, nil
	}
	old := tat
	if allowed {
		old = tat - cost*g.Interval()
	}
	next, d, _ := g.Step(old, now, cost)
	if d.Allowed != allowed || (allowed && next != tat) {
		return algorithm.Decision{}, fmt.Errorf("%w: store allowed=%v tat=%d, step allowed=%v tat=%d at %d",
			ErrMismatch, allowed, tat, d.Allowed, next, now)
	}
	return d, nil
}
