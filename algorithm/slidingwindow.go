package algorithm

import (
	"encoding/binary"
	"math"
	"time"
)

// SlidingState is a sliding window counter's per-key state: the start of
// the current window (Unix nanoseconds, a multiple of W) and the counts of
// the current and the previous window. Zero counts mean a fresh key.
type SlidingState struct {
	Start int64
	Cur   uint32
	Prev  uint32
}

// SlidingWindow is the sliding window counter (the weighted two-window
// approximation popularised by Cloudflare): time is cut into windows of
// length W aligned to the Unix epoch, each key counts the requests admitted
// in the current window (cur) and in the one before (prev), and at a point
// a fraction f = e/W into the current window it estimates the requests of
// the last W as
//
//	est = cur + ⌈prev·(W−e)/W⌉
//
// assuming the previous window's requests were spread evenly. A request of
// cost n is admitted iff est + n ≤ Limit. The arithmetic is exact (128-bit
// products, no floating point in the decision).
//
// # Error bound
//
// The estimate differs from the true count of the last W only in how much
// of the previous window it counts: the true count is cur + a, where a (0 ≤
// a ≤ prev) is the number of the previous window's requests made in its
// last W−e. So the counter admits too much when the previous window's
// requests came late in it, and too little when they came early:
//
//   - Over-admission: in any interval of length W ending at a point a
//     fraction f into a window whose predecessor admitted p requests, at most
//     Limit + ⌊p·f⌋ requests are admitted. The worst case is 2·Limit−1
//     (Limit requests at the very end of one window, then Limit−1 near the
//     end of the next), against up to 2·Limit for a fixed window, and it
//     needs bursts timed at window ends; for requests spread evenly over
//     the previous window (a = p·(1−f)) it is exactly Limit.
//   - Under-admission: a request may be denied while the true count of the
//     last W would admit up to ⌈p·(1−f)⌉ more.
//
// The exact alternative is SlidingLog, at up to 16·Limit bytes per key
// rather than 16.
//
// A SlidingWindow is safe for simultaneous use. Its zero value has capacity 0, so
// no request can pass; create one with NewSlidingWindow.
type SlidingWindow struct {
	limit int64
	w     int64
	invW  float64
}

// NewSlidingWindow compiles limit requests per window (1 ≤ limit ≤
// MaxWindowLimit; 0 < window ≤ MaxWindow).
func NewSlidingWindow(limit int64, window time.Duration) (SlidingWindow, error) {
	if err := checkWindow("sliding-window", limit, MaxWindowLimit, window); err != nil {
		return SlidingWindow{}, err
	}
	return SlidingWindow{limit: limit, w: int64(window), invW: 1 / float64(window)}, nil
}

// Name returns "sliding-window".
func (SlidingWindow) Name() string { return "sliding-window" }

// Capacity returns Limit.
func (sw SlidingWindow) Capacity() int64 { return sw.limit }

// Window returns W in nanoseconds.
func (sw SlidingWindow) Window() int64 { return sw.w }

// Fresh returns the zero state: no requests counted.
func (SlidingWindow) Fresh(int64) SlidingState { return SlidingState{} }

// roll returns s moved to the window that contains now, and how far into
// that window now is. A state whose window starts after now (a remote
// admission from a clock ahead of ours) is taken as it is, at elapsed 0.
func (sw SlidingWindow) roll(s SlidingState, now int64) (SlidingState, int64) {
	if s.Cur == 0 && s.Prev == 0 {
		st := alignDown(now, sw.w)
		return SlidingState{Start: st}, now - st
	}
	if now < s.Start {
		return s, 0
	}
	d := uint64(now) - uint64(s.Start)
	switch w := uint64(sw.w); {
	case d < w:
		return s, int64(d)
	case d < 2*w:
		return SlidingState{Start: s.Start + sw.w, Prev: s.Cur}, int64(d - w)
	}
	st := alignDown(now, sw.w)
	return SlidingState{Start: st}, now - st
}

// weighted returns ⌈prev·(W−e)/W⌉, the previous window's share at elapsed e.
func (sw SlidingWindow) weighted(prev uint32, e int64) int64 {
	if prev == 0 {
		return 0
	}
	return int64(ceilMulDiv(uint64(prev), uint64(sw.w-e), uint64(sw.w), sw.invW))
}

// Step decides a request of the given cost at now.
func (sw SlidingWindow) Step(s SlidingState, now, cost int64) (SlidingState, Decision, bool) {
	var d Decision
	next, changed := sw.StepInto(s, now, cost, &d)
	return next, d, changed
}

// StepInto is Step writing the decision into *d, which saves copying it
// on the shard's hot path (see StepperInto).
func (sw SlidingWindow) StepInto(s SlidingState, now, cost int64, d *Decision) (SlidingState, bool) {
	r, e := sw.roll(s, now)
	used := int64(r.Cur) + sw.weighted(r.Prev, e)
	c := max(cost, 1)
	*d = Decision{Limit: int(sw.limit)}
	if cost == 0 || used+c > sw.limit {
		d.Remaining = int(min(max(sw.limit-used, 0), sw.limit))
		d.ResetAfter = sw.resetAfter(r, now)
		if used+c > sw.limit {
			d.RetryAfter = sw.retryAfter(r, now, c)
		} else {
			d.Allowed = true
		}
		return s, false
	}
	r.Cur = addU32(r.Cur, cost)
	d.Allowed = true
	d.Remaining = int(sw.limit - used - cost)
	d.ResetAfter = sw.resetAfter(r, now)
	return r, true
}

// retryAfter is the shortest wait after which a request of cost c is
// admitted, for a rolled state r that denies it now.
func (sw SlidingWindow) retryAfter(r SlidingState, now, c int64) time.Duration {
	if c > sw.limit {
		return math.MaxInt64 // cost above capacity: never
	}
	toEnd := subSat(addSat(r.Start, sw.w), now) // > 0
	// Within the current window, the previous window's share decays: at
	// elapsed e it is admitted iff prev·(W−e) ≤ k·W with k = L−cur−c, that
	// is from e = W − ⌊k·W/prev⌋ on.
	if k := sw.limit - int64(r.Cur) - c; k >= 0 && r.Prev > 0 {
		if f := floorMulDiv(uint64(k), uint64(sw.w), uint64(r.Prev)); f > 0 {
			return durationOf(subSat(toEnd, int64(min(f, uint64(sw.w)))))
		}
	}
	// Otherwise in the next window, where prev becomes cur and cur is 0.
	e2 := int64(0)
	if k := sw.limit - c; int64(r.Cur) > k {
		e2 = sw.w - int64(floorMulDiv(uint64(k), uint64(sw.w), uint64(r.Cur)))
	}
	return durationOf(addSat(toEnd, e2))
}

func (sw SlidingWindow) resetAfter(r SlidingState, now int64) time.Duration {
	return durationOf(max(subSat(sw.IdleAt(r), now), 0))
}

// Apply counts cost requests admitted elsewhere at time at, without
// deciding: in the current window, the previous one, or (for a time in a
// later window) after rolling forward to it. Older admissions no longer
// count and are dropped.
func (sw SlidingWindow) Apply(s SlidingState, at, cost int64) SlidingState {
	if cost <= 0 {
		return s
	}
	switch {
	case s.Cur == 0 && s.Prev == 0:
		return SlidingState{Start: alignDown(at, sw.w), Cur: addU32(0, cost)}
	case at >= s.Start:
		r, _ := sw.roll(s, at)
		r.Cur = addU32(r.Cur, cost)
		return r
	case at >= subSat(s.Start, sw.w):
		s.Prev = addU32(s.Prev, cost)
	}
	return s
}

// IdleAt returns the time the estimate falls to zero: the end of the window
// after the last one with requests.
func (sw SlidingWindow) IdleAt(s SlidingState) int64 {
	switch {
	case s.Cur > 0:
		return addSat(addSat(s.Start, sw.w), sw.w)
	case s.Prev > 0:
		return addSat(s.Start, sw.w)
	}
	return math.MinInt64
}

// Rebase keeps the counts when only Limit changes. When the window length
// changes, the requests the key has used (the old estimate at now, rounded
// up) are counted in the new window that contains now, so no key keeps an
// allowance the new limit would not give it. prev must be a SlidingWindow.
func (sw SlidingWindow) Rebase(s SlidingState, now int64, prev Algorithm[SlidingState]) SlidingState {
	p, ok := prev.(SlidingWindow)
	if !ok || p.w == sw.w {
		return s
	}
	r, e := p.roll(s, now)
	used := int64(r.Cur) + p.weighted(r.Prev, e)
	if used == 0 {
		return SlidingState{}
	}
	return SlidingState{Start: alignDown(now, sw.w), Cur: addU32(0, used)}
}

// AppendState appends a tag byte, Start, Cur and Prev (big-endian): 17
// bytes.
func (SlidingWindow) AppendState(dst []byte, s SlidingState) []byte {
	dst = binary.BigEndian.AppendUint64(append(dst, tagSlidingWindow), uint64(s.Start))
	dst = binary.BigEndian.AppendUint32(dst, s.Cur)
	return binary.BigEndian.AppendUint32(dst, s.Prev)
}

// DecodeState reads what AppendState wrote.
func (SlidingWindow) DecodeState(b []byte) (SlidingState, error) {
	if len(b) != 17 || b[0] != tagSlidingWindow {
		return SlidingState{}, stateError("sliding-window", b, "17 bytes tagged 'S'")
	}
	return SlidingState{
		Start: int64(binary.BigEndian.Uint64(b[1:])),
		Cur:   binary.BigEndian.Uint32(b[9:]),
		Prev:  binary.BigEndian.Uint32(b[13:]),
	}, nil
}

// addU32 returns a+n saturated at MaxUint32 (n ≥ 0).
func addU32(a uint32, n int64) uint32 {
	if n >= math.MaxUint32-int64(a) {
		return math.MaxUint32
	}
	return a + uint32(n)
}

var _ Algorithm[SlidingState] = SlidingWindow{}

var _ StepperInto[SlidingState] = SlidingWindow{}
