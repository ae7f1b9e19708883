package algorithm_test

// The invariants every algorithm shares, checked on every step of every
// table, differential and fuzz test of the algorithms other than GCRA:
//
//   - a denial (and a peek) returns the state it was given, unchanged;
//   - waiting exactly RetryAfter admits the same request, 1 ns less does not;
//   - 0 ≤ Remaining ≤ Limit = Capacity, ResetAfter ≥ 0, Delay ≥ 0, and
//     RetryAfter > 0 exactly when the request is denied;
//   - a peek answers as a cost-1 request would, without consuming;
//   - cost n is admitted iff n single checks are, with the same final
//     state and decision;
//   - Apply of an admitted cost equals the admission;
//   - the state survives AppendState/DecodeState;
//   - ResetAfter later the key is at full capacity, and from IdleAt on the
//     state behaves as a fresh key.

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
)

// harness checks one algorithm's steps against the shared invariants.
type harness[S any] struct {
	t     testing.TB
	alg   algorithm.Algorithm[S]
	clone func(S) S
	// probes are the offsets from now at which two states must answer
	// alike to be equal.
	probes []int64
}

func newHarness[S any](t testing.TB, alg algorithm.Algorithm[S], clone func(S) S, unit int64) *harness[S] {
	if clone == nil {
		clone = func(s S) S { return s }
	}
	return &harness[S]{t: t, alg: alg, clone: clone, probes: []int64{0, 1, unit / 3, unit, unit + unit/2, 3 * unit, 10 * unit}}
}

// step runs Step(s, now, cost) as a shard would (handing s over) and checks
// every invariant around it. It returns the state to keep.
func (h *harness[S]) step(s S, now, cost int64) (S, algorithm.Decision) {
	h.t.Helper()
	alg := h.alg
	before := h.clone(s)
	// Everything that needs the state before the step runs on clones first.
	var singles []algorithm.Decision
	var singleState S
	allSingle := true
	if cost > 1 {
		st := h.clone(s)
		for range cost {
			var d algorithm.Decision
			st, d, _ = alg.Step(st, now, 1)
			singles = append(singles, d)
			if !d.Allowed {
				allSingle = false
				break
			}
		}
		singleState = st
	}
	var peek1 algorithm.Decision
	if cost == 0 {
		_, peek1, _ = alg.Step(h.clone(s), now, 1)
	}
	applied := alg.Apply(h.clone(s), now, cost)
	if in, ok := alg.(algorithm.StepperInto[S]); ok {
		// Shards decide into reused slots: StepInto must write every field
		// and agree with Step.
		into := algorithm.Decision{Allowed: true, Limit: -7, Remaining: -7, RetryAfter: -7, ResetAfter: -7, Delay: -7}
		n2, ch2 := in.StepInto(h.clone(s), now, cost, &into)
		n1, d1, ch1 := alg.Step(h.clone(s), now, cost)
		if into != d1 || ch1 != ch2 || !equalState(n1, n2) {
			h.t.Fatalf("%s: cost %d at %d: StepInto into a used Decision gave %+v (changed %v, %v), Step %+v (changed %v, %v)",
				alg.Name(), cost, now, into, ch2, n2, d1, ch1, n1)
		}
	}

	next, d, changed := alg.Step(s, now, cost)

	if !h.same(s, before, now) || !equalState(s, before) {
		h.t.Fatalf("%s: Step wrote into the state it was given: %v, was %v", alg.Name(), s, before)
	}
	h.checkDecision(d, cost)
	if !d.Allowed || cost == 0 {
		if changed || !equalState(next, before) {
			h.t.Fatalf("%s: cost %d at %d: %+v changed the state %v to %v", alg.Name(), cost, now, d, before, next)
		}
	} else if !changed {
		h.t.Fatalf("%s: admission of cost %d reported no change", alg.Name(), cost)
	}
	if cost == 0 {
		if peek1.Allowed != d.Allowed || peek1.RetryAfter != d.RetryAfter || peek1.Delay != d.Delay {
			h.t.Fatalf("%s: peek %+v, cost-1 request %+v", alg.Name(), d, peek1)
		}
		if d.Allowed && peek1.Remaining != d.Remaining-1 {
			h.t.Fatalf("%s: peek Remaining %d, after a cost-1 admission %d", alg.Name(), d.Remaining, peek1.Remaining)
		}
		if !d.Allowed && (peek1.Remaining != d.Remaining || peek1.ResetAfter != d.ResetAfter) {
			h.t.Fatalf("%s: peek %+v, denied cost-1 request %+v", alg.Name(), d, peek1)
		}
	}
	if cost > 1 {
		if allSingle != d.Allowed {
			h.t.Fatalf("%s: cost %d allowed=%v, but %d single checks: %+v", alg.Name(), cost, d.Allowed, cost, singles)
		}
		if d.Allowed {
			if last := singles[len(singles)-1]; last != d {
				h.t.Fatalf("%s: cost %d decided %+v, the last of %d single checks %+v", alg.Name(), cost, d, cost, last)
			}
			if !h.same(singleState, next, now) {
				h.t.Fatalf("%s: cost %d left %v, %d single checks %v", alg.Name(), cost, next, cost, singleState)
			}
		}
	}
	if d.Allowed && cost > 0 && !h.same(applied, next, now) {
		h.t.Fatalf("%s: Apply(%d) at now gave %v, the admission %v", alg.Name(), cost, applied, next)
	}
	if !d.Allowed && d.RetryAfter < time.Duration(math.MaxInt64/4) {
		c := max(cost, 1)
		at := now + int64(d.RetryAfter)
		if _, d2, _ := alg.Step(h.clone(next), at, c); !d2.Allowed {
			h.t.Fatalf("%s: denied at %d with RetryAfter %v, still denied then: %+v", alg.Name(), now, d.RetryAfter, d2)
		}
		if _, d2, _ := alg.Step(h.clone(next), at-1, c); d2.Allowed {
			h.t.Fatalf("%s: denied at %d with RetryAfter %v, already admitted 1 ns earlier: %+v", alg.Name(), now, d.RetryAfter, d2)
		}
	}
	if d.ResetAfter < time.Duration(math.MaxInt64/4) {
		if _, d2, _ := alg.Step(h.clone(next), now+int64(d.ResetAfter), 0); d2.Remaining != d2.Limit {
			h.t.Fatalf("%s: ResetAfter %v, but then Remaining is %d of %d", alg.Name(), d.ResetAfter, d2.Remaining, d2.Limit)
		}
	}
	h.checkEncoding(next, now)
	h.checkIdle(next, now)
	return next, d
}

// apply runs Apply as a shard would and checks the result encodes.
func (h *harness[S]) apply(s S, at, now, cost int64) S {
	h.t.Helper()
	next := h.alg.Apply(s, at, cost)
	h.checkEncoding(next, now)
	return next
}

func (h *harness[S]) checkDecision(d algorithm.Decision, cost int64) {
	h.t.Helper()
	name := h.alg.Name()
	switch {
	case int64(d.Limit) != h.alg.Capacity():
		h.t.Fatalf("%s: Limit %d, Capacity %d", name, d.Limit, h.alg.Capacity())
	case d.Remaining < 0 || d.Remaining > d.Limit:
		h.t.Fatalf("%s: Remaining %d of %d", name, d.Remaining, d.Limit)
	case d.ResetAfter < 0 || d.Delay < 0:
		h.t.Fatalf("%s: negative duration in %+v", name, d)
	case d.Allowed != (d.RetryAfter == 0):
		h.t.Fatalf("%s: cost %d: Allowed %v with RetryAfter %v", name, cost, d.Allowed, d.RetryAfter)
	case !d.Allowed && d.Delay != 0:
		h.t.Fatalf("%s: a denial with Delay %v", name, d.Delay)
	}
}

func (h *harness[S]) checkEncoding(s S, now int64) {
	h.t.Helper()
	b := h.alg.AppendState([]byte("prefix"), s)
	if string(b[:6]) != "prefix" {
		h.t.Fatalf("%s: AppendState overwrote dst", h.alg.Name())
	}
	got, err := h.alg.DecodeState(b[6:])
	if err != nil {
		h.t.Fatalf("%s: DecodeState(AppendState(%v)): %v", h.alg.Name(), s, err)
	}
	if !h.same(got, s, now) {
		h.t.Fatalf("%s: state %v decoded as %v", h.alg.Name(), s, got)
	}
	if _, err := h.alg.DecodeState(b[6 : len(b)-1]); err == nil && fixedSize(h.alg) {
		h.t.Fatalf("%s: a truncated state decoded", h.alg.Name())
	}
	if _, err := h.alg.DecodeState(append(b[6:len(b):len(b)], 0)); err == nil {
		h.t.Fatalf("%s: a state with a trailing byte decoded", h.alg.Name())
	}
}

// fixedSize reports whether the algorithm's encoding has a fixed length.
func fixedSize[S any](alg algorithm.Algorithm[S]) bool { return alg.Name() != "sliding-window-log" }

func (h *harness[S]) checkIdle(s S, now int64) {
	h.t.Helper()
	idle := h.alg.IdleAt(s)
	if idle > math.MaxInt64/4 {
		return
	}
	at := max(idle, now)
	if !h.same(s, h.alg.Fresh(at), at) {
		h.t.Fatalf("%s: %v is idle from %d, but at %d it differs from a fresh key", h.alg.Name(), s, idle, at)
	}
	if idle > now && h.same(s, h.alg.Fresh(now), now) && h.alg.Name() != "sliding-window-log" {
		// Not an error in itself, but IdleAt should be tight for the
		// counters: a non-idle state must differ from a fresh key.
		h.t.Fatalf("%s: %v equals a fresh key at %d, yet IdleAt is %d", h.alg.Name(), s, now, idle)
	}
}

// same reports whether a and b answer every probe alike from now on.
func (h *harness[S]) same(a, b S, now int64) bool {
	ia, ib := h.alg.IdleAt(a), h.alg.IdleAt(b)
	if (ia > now || ib > now) && ia != ib {
		return false
	}
	for _, p := range h.probes {
		for _, c := range []int64{0, 1, h.alg.Capacity()} {
			_, da, _ := h.alg.Step(h.clone(a), now+p, c)
			_, db, _ := h.alg.Step(h.clone(b), now+p, c)
			if da != db {
				return false
			}
		}
	}
	return true
}

// equalState compares states by value (slices by their entries).
func equalState[S any](a, b S) bool {
	switch x := any(a).(type) {
	case []int64:
		return slices.Equal(x, any(b).([]int64))
	}
	return any(a) == any(b)
}

// ops decodes a fuzz or random program: each op is three bytes.
type op struct {
	kind uint8 // 0 advance, 1 check, 2 apply, 3 rebase
	a, b uint8
}

func decodeOps(b []byte) []op {
	var ops []op
	for len(b) >= 3 && len(ops) < 200 {
		ops = append(ops, op{kind: b[0] % 4, a: b[1], b: b[2]})
		b = b[3:]
	}
	return ops
}

func randomOps(r interface{ IntN(int) int }, n int) []byte {
	b := make([]byte, 3*n)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

// advance turns an op's bytes into a time step: mostly small against unit,
// sometimes several units.
func advance(o op, unit int64) int64 {
	x := float64(int64(o.a)<<8|int64(o.b)) / 65536
	switch o.a % 4 {
	case 0:
		return int64(o.b % 4) // nanoseconds: exercises rounding
	case 1:
		return int64(float64(unit) * x / 4)
	case 2:
		return int64(float64(unit) * x)
	}
	return int64(float64(unit) * x * 4)
}

// t0 is a clock reading away from any window boundary in UTC.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC).UnixNano()

func describe(d algorithm.Decision) string {
	return fmt.Sprintf("{ok=%v lim=%d rem=%d retry=%v reset=%v delay=%v}", d.Allowed, d.Limit, d.Remaining, d.RetryAfter, d.ResetAfter, d.Delay)
}
