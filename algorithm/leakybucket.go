package algorithm

import (
	"encoding/binary"
	"math"
)

// LeakyBucket is the leaky bucket as a queue that shapes traffic. Accepted
// requests leave the queue at a fixed rate: each unit of cost gets a slot of
// length T = 1/Rate, slots follow one another back to back and none starts
// before the request arrives. A unit occupies the queue until its slot ends,
// and the queue holds C = floor(Burst)+1 units: a request of cost n is
// accepted iff the units still queued plus n fit in C; a full queue is a
// denial.
//
// An accepted request is told to wait Delay before acting: the time until
// the slot of its last unit begins. So a fresh key's first request acts at
// once, the next ones after T, 2T, …, and the C-th after (C−1)·T; requests
// that honour Delay leave at exactly Rate per second, whatever the arrival
// pattern. This is the pacing uber-go/ratelimit or x/time/rate's Reserve
// give, kept per key.
//
// Which requests are accepted is exactly GCRA's answer for the same rate
// and the integer burst floor(Burst) (the leaky bucket as a meter and GCRA
// are the same policy); the queue adds Delay. Its state is one int64: the
// end of the last queued slot (Unix nanoseconds), or less than now when
// the queue is empty.
//
// A LeakyBucket is safe for simultaneous use. Its zero value has capacity 0, so
// no request can pass; create one with NewLeakyBucket.
type LeakyBucket struct {
	g GCRA // rate and the integer burst: τ = (C−1)·T
}

// NewLeakyBucket compiles rate (0 < rate ≤ 1e9 units per second) and burst
// (≥ 0): the queue holds floor(burst)+1 units (a fractional part of burst
// is dropped: a queue holds whole requests) and drains one unit every
// T = 1e9/rate ns, rounded to the nearest nanosecond.
func NewLeakyBucket(rate, burst float64) (LeakyBucket, error) {
	if !math.IsNaN(burst) && !math.IsInf(burst, 0) && burst > 0 {
		burst = math.Floor(burst)
	}
	g, err := NewGCRA(rate, burst)
	if err != nil {
		return LeakyBucket{}, err
	}
	return LeakyBucket{g: g}, nil
}

// Name returns "leaky-bucket".
func (LeakyBucket) Name() string { return "leaky-bucket" }

// Capacity returns the queue's size in units: floor(burst)+1.
func (q LeakyBucket) Capacity() int64 { return q.g.Capacity() }

// Interval returns T, the length of one unit's slot in nanoseconds.
func (q LeakyBucket) Interval() int64 { return q.g.Interval() }

// Fresh returns an empty queue.
func (LeakyBucket) Fresh(int64) int64 { return math.MinInt64 }

// Step decides a request of the given cost at now. An accepted request's
// Delay is the wait until the slot of its last unit begins; a peek reports
// the Delay a cost-1 request would get.
func (q LeakyBucket) Step(end, now, cost int64) (int64, Decision, bool) {
	var d Decision
	next, changed := q.StepInto(end, now, cost, &d)
	return next, d, changed
}

// StepInto is Step writing the decision into *d, which saves copying it
// on the shard's hot path (see StepperInto).
func (q LeakyBucket) StepInto(end, now, cost int64, d *Decision) (int64, bool) {
	next, changed := q.g.StepInto(end, now, cost, d)
	if d.Allowed {
		// Saturating: near the top of the clock a slot's end saturates
		// at MaxInt64, and the wait must not come out negative.
		if cost == 0 {
			d.Delay = durationOf(subSat(max(end, now), now))
		} else {
			d.Delay = durationOf(max(subSat(subSat(next, q.g.t), now), 0))
		}
	}
	return next, changed
}

// Apply queues cost units accepted elsewhere at time at, without deciding.
func (q LeakyBucket) Apply(end, at, cost int64) int64 { return q.g.Apply(end, at, cost) }

// IdleAt returns the end of the last queued slot: from then on the queue is
// empty.
func (LeakyBucket) IdleAt(end int64) int64 { return end }

// Rebase keeps the units queued (measured in slots of the old rate, the
// share rounded up) as slots of the new rate, capped at the new capacity,
// as GCRA's Rebase does. prev must be a LeakyBucket.
func (q LeakyBucket) Rebase(end, now int64, prev Algorithm[int64]) int64 {
	p, ok := prev.(LeakyBucket)
	if !ok {
		p = q
	}
	return q.g.Rebase(end, now, p.g)
}

// AppendState appends a tag byte and the end of the last slot (big-endian):
// 9 bytes.
func (LeakyBucket) AppendState(dst []byte, end int64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, tagLeakyBucket), uint64(end))
}

// DecodeState reads what AppendState wrote.
func (LeakyBucket) DecodeState(b []byte) (int64, error) {
	if len(b) != 9 || b[0] != tagLeakyBucket {
		return 0, stateError("leaky-bucket", b, "9 bytes tagged 'Q'")
	}
	return int64(binary.BigEndian.Uint64(b[1:])), nil
}

var _ Algorithm[int64] = LeakyBucket{}

var _ StepperInto[int64] = LeakyBucket{}
