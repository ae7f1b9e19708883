package load

import (
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of
// two, so a recorded value is off by at most 1/64 (1.6%).
const subBits = 6

const (
	subCount = 1 << subBits
	// 64-bit values need at most (64-subBits+1) ranges of subCount buckets.
	bucketCount = (64 - subBits + 1) * subCount
)

// Hist is a log-linear latency histogram (HDR-like) with a fixed size and
// no allocation per record. It is not safe for simultaneous use: give each
// goroutine its own and Merge them.
type Hist struct {
	counts [bucketCount]uint64
	n      uint64
	max    int64
}

func bucketOf(v int64) int {
	if v < subCount {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	e := bits.Len64(uint64(v)) - subBits - 1 // v>>e is in [subCount, 2*subCount)
	return (e+1)*subCount + int(uint64(v)>>e) - subCount
}

// bucketTop returns the largest value bucket i holds.
func bucketTop(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	e := i/subCount - 1
	m := int64(i%subCount + subCount)
	return (m+1)<<e - 1
}

// Record adds one observation.
func (h *Hist) Record(d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)]++
	h.n++
	if v > h.max {
		h.max = v
	}
}

// Merge adds o's observations to h.
func (h *Hist) Merge(o *Hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Count returns the number of observations.
func (h *Hist) Count() uint64 { return h.n }

// Max returns the largest observation.
func (h *Hist) Max() time.Duration { return time.Duration(h.max) }

// Quantile returns the q-quantile (0 < q ≤ 1), rounded up to its bucket's
// top, so it never understates a latency by more than the bucket width.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = max(rank, 1)
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			return time.Duration(min(bucketTop(i), h.max))
		}
	}
	return time.Duration(h.max)
}
