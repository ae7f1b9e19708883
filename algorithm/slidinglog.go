package algorithm

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/fluxlimiter/flux/internal/errs"
)

// SlidingLog is the exact sliding window: a key may have at most Limit
// requests admitted in any window of length W. Its state is the log of
// admission times (Unix nanoseconds, ascending, one entry per unit of
// cost): an entry stamped t counts while now < t+W. A request of cost n at
// now is admitted iff the entries that still count plus n are at most
// Limit; it appends n entries stamped now.
//
// The log is bounded: it never holds more than Limit live entries (entries
// beyond the newest Limit can never change a decision, since a request is
// only admitted once all but Limit−n of them have expired). Its cost is
// memory: 8 bytes per admission still in the window, and up to twice that
// while the backing array is reused (see below), so a saturated key holds
// up to 16·Limit bytes; and a check costs a binary search over the log.
// Prefer the sliding window counter (SlidingWindow, 16 bytes per key) when
// Limit is large or keys are many.
//
// States share storage the way slices returned by append do: Step, Apply
// and Rebase may write into the spare capacity beyond a state's length
// (never into its entries). So a state passed to one of them must not be
// passed to another afterwards: keep the returned state, as a shard does.
// Reading an old state (encoding a snapshot of it, say) stays safe, even
// while the shard goes on with the returned one.
//
// A SlidingLog is safe for simultaneous use. Its zero value has capacity 0, so
// no request can pass; create one with NewSlidingLog.
type SlidingLog struct {
	limit int64
	w     int64
}

// NewSlidingLog compiles limit requests per window (1 ≤ limit ≤
// MaxLogLimit; 0 < window ≤ MaxWindow).
func NewSlidingLog(limit int64, window time.Duration) (SlidingLog, error) {
	if err := checkWindow("sliding-window-log", limit, MaxLogLimit, window); err != nil {
		return SlidingLog{}, err
	}
	return SlidingLog{limit: limit, w: int64(window)}, nil
}

// Name returns "sliding-window-log".
func (SlidingLog) Name() string { return "sliding-window-log" }

// Capacity returns Limit.
func (l SlidingLog) Capacity() int64 { return l.limit }

// Window returns W in nanoseconds.
func (l SlidingLog) Window() int64 { return l.w }

// Fresh returns an empty log.
func (SlidingLog) Fresh(int64) []int64 { return nil }

// live returns the entries of s that still count at now (t > now−W).
func (l SlidingLog) live(s []int64, now int64) []int64 {
	cut := subSat(now, l.w) // entries ≤ cut have expired
	if len(s) == 0 || s[0] > cut {
		return s
	}
	// Binary search for the first entry > cut.
	lo, hi := 1, len(s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s[m] > cut {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return s[lo:]
}

// Step decides a request of the given cost at now.
func (l SlidingLog) Step(s []int64, now, cost int64) ([]int64, Decision, bool) {
	var d Decision
	next, changed := l.StepInto(s, now, cost, &d)
	return next, d, changed
}

// StepInto is Step writing the decision into *d, which saves copying it
// on the shard's hot path (see StepperInto).
func (l SlidingLog) StepInto(s []int64, now, cost int64, d *Decision) ([]int64, bool) {
	lv := l.live(s, now)
	n := int64(len(lv))
	*d = Decision{Limit: int(l.limit)}
	c := max(cost, 1)
	if cost == 0 || n+c > l.limit {
		d.Remaining = int(max(l.limit-n, 0))
		d.ResetAfter = l.resetAfter(lv, now)
		if k := n + c - l.limit; k > n {
			d.RetryAfter = math.MaxInt64 // cost above capacity: never
		} else if k > 0 {
			// The oldest k live entries must expire first.
			d.RetryAfter = durationOf(subSat(addSat(lv[k-1], l.w), now))
		} else {
			d.Allowed = true
		}
		return s, false
	}
	t := now
	if n > 0 && lv[n-1] > now {
		t = lv[n-1] // keep the log sorted if a remote entry is ahead of us
	}
	next := l.appendN(lv, t, cost)
	d.Allowed = true
	d.Remaining = int(l.limit - n - cost)
	d.ResetAfter = durationOf(subSat(addSat(t, l.w), now))
	return next, true
}

func (l SlidingLog) resetAfter(lv []int64, now int64) time.Duration {
	if len(lv) == 0 {
		return 0
	}
	return durationOf(max(subSat(addSat(lv[len(lv)-1], l.w), now), 0))
}

// appendN appends n entries stamped t to s (n ≤ limit), writing only beyond
// len(s), and keeps the newest limit entries.
func (l SlidingLog) appendN(s []int64, t, n int64) []int64 {
	k := len(s) + int(n)
	if k > cap(s) {
		// Room for as many entries again (4 more for short logs), so that
		// a key reallocates about once per len(s)+4 admissions.
		c := min(2*k+4, max(2*int(l.limit), k))
		ns := make([]int64, len(s), c)
		copy(ns, s)
		s = ns
	}
	old := len(s)
	s = s[:k]
	for i := old; i < k; i++ {
		s[i] = t
	}
	if int64(len(s)) > l.limit {
		s = s[int64(len(s))-l.limit:]
	}
	return s
}

// Apply logs cost entries admitted elsewhere at time at, without deciding.
// An entry older than the newest one is inserted in order (into a new
// array: old states are never written).
func (l SlidingLog) Apply(s []int64, at, cost int64) []int64 {
	if cost <= 0 {
		return s
	}
	n := min(cost, l.limit)
	if len(s) == 0 || at >= s[len(s)-1] {
		return l.appendN(s, at, n)
	}
	i := len(s)
	for i > 0 && s[i-1] > at {
		i--
	}
	ns := make([]int64, 0, len(s)+int(n))
	ns = append(ns, s[:i]...)
	for range n {
		ns = append(ns, at)
	}
	ns = append(ns, s[i:]...)
	if int64(len(ns)) > l.limit {
		ns = ns[int64(len(ns))-l.limit:]
	}
	return ns
}

// IdleAt returns the time the newest entry expires.
func (l SlidingLog) IdleAt(s []int64) int64 {
	if len(s) == 0 {
		return math.MinInt64
	}
	return addSat(s[len(s)-1], l.w)
}

// Rebase keeps the entries that count at now under the previous window
// (the requests the key has used), lets each count for the new window from
// its own time, and keeps at most the newest new-Limit of them, which
// changes no decision. prev must be a SlidingLog.
func (l SlidingLog) Rebase(s []int64, now int64, prev Algorithm[[]int64]) []int64 {
	if p, ok := prev.(SlidingLog); ok {
		s = p.live(s, now)
	}
	s = l.live(s, now)
	if int64(len(s)) > l.limit {
		s = s[int64(len(s))-l.limit:]
	}
	return s
}

// AppendState appends a tag byte, the number of entries (uvarint), the
// first entry (varint) and the gap to each next entry (uvarint).
func (SlidingLog) AppendState(dst []byte, s []int64) []byte {
	dst = append(dst, tagSlidingLog)
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	prev := int64(0)
	for i, t := range s {
		if i == 0 {
			dst = binary.AppendVarint(dst, t)
		} else {
			dst = binary.AppendUvarint(dst, uint64(t-prev))
		}
		prev = t
	}
	return dst
}

// DecodeState reads what AppendState wrote, keeping the newest Limit
// entries.
func (l SlidingLog) DecodeState(b []byte) ([]int64, error) {
	if len(b) < 2 || b[0] != tagSlidingLog {
		return nil, stateError("sliding-window-log", b, "tagged 'L'")
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, fmt.Errorf("%w: sliding-window-log state: bad entry count", errs.InvalidState)
	}
	b = b[k:]
	s := make([]int64, 0, n)
	prev := int64(0)
	for i := range n {
		var t int64
		if i == 0 {
			v, k := binary.Varint(b)
			if k <= 0 {
				return nil, fmt.Errorf("%w: sliding-window-log state: bad entry %d", errs.InvalidState, i)
			}
			t, b = v, b[k:]
		} else {
			v, k := binary.Uvarint(b)
			if k <= 0 || v > uint64(math.MaxInt64)-uint64(prev) {
				return nil, fmt.Errorf("%w: sliding-window-log state: bad entry %d", errs.InvalidState, i)
			}
			t, b = int64(uint64(prev)+v), b[k:]
		}
		s = append(s, t)
		prev = t
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: sliding-window-log state: %d trailing bytes", errs.InvalidState, len(b))
	}
	if int64(len(s)) > l.limit {
		s = s[int64(len(s))-l.limit:]
	}
	return s, nil
}

var _ Algorithm[[]int64] = SlidingLog{}

var _ StepperInto[[]int64] = SlidingLog{}
