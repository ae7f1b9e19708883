package algorithm

import (
	"fmt"
	"math"
	"math/bits"
	"time"

	"github.com/fluxlimiter/flux/internal/errs"
)

// Bounds shared by the window algorithms.
const (
	// MaxWindowLimit is the largest Limit (requests per window) accepted by
	// the fixed and sliding windows: their counters are 32 bits wide, which
	// keeps a key's state at 16 bytes.
	MaxWindowLimit = math.MaxInt32
	// MaxLogLimit is the largest Limit accepted by the sliding window log,
	// which keeps one timestamp per admitted request: a saturated key holds
	// up to 2·Limit·8 bytes (1 MiB at this bound).
	MaxLogLimit = 1 << 16
	// MaxWindow is the longest window accepted: 2^62 ns, about 146 years,
	// so that window arithmetic near any plausible clock reading stays far
	// from int64 overflow.
	MaxWindow = time.Duration(maxSpan)
)

// subSat returns a−b, saturated at the int64 bounds.
func subSat(a, b int64) int64 {
	c := a - b
	if (c < a) != (b > 0) {
		if b > 0 {
			return math.MinInt64
		}
		return math.MaxInt64
	}
	return c
}

// floorDiv returns floor(a/b) for b > 0.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// alignDown returns the largest multiple of w that is ≤ t, or MinInt64 if
// that multiple is not representable (t itself if w ≤ 0).
func alignDown(t, w int64) int64 {
	if w <= 0 {
		return t
	}
	q := floorDiv(t, w)
	if q < math.MinInt64/w {
		return math.MinInt64
	}
	return q * w
}

// lessEq128 reports whether (ah,al) ≤ (bh,bl) as unsigned 128-bit numbers.
func lessEq128(ah, al, bh, bl uint64) bool { return ah < bh || ah == bh && al <= bl }

// ceilMulDiv returns ceil(a·b/c) for c > 0 and a·b/c < 2^63, exactly. A
// floating-point estimate (off by at most one here) is corrected with
// 128-bit products, which is several times cheaper than a 128-bit division.
func ceilMulDiv(a, b, c uint64, invC float64) uint64 {
	if a == 0 || b == 0 {
		return 0
	}
	ph, pl := bits.Mul64(a, b)
	q := uint64(float64(a) * float64(b) * invC)
	// Raise q until q·c ≥ a·b, then lower it while (q−1)·c ≥ a·b.
	for {
		h, l := bits.Mul64(q, c)
		if lessEq128(ph, pl, h, l) {
			break
		}
		q++
	}
	for q > 0 {
		h, l := bits.Mul64(q-1, c)
		if !lessEq128(ph, pl, h, l) {
			break
		}
		q--
	}
	return q
}

// floorMulDiv returns floor(a·b/c) for c > 0, saturated at MaxUint64.
func floorMulDiv(a, b, c uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi >= c {
		return math.MaxUint64
	}
	q, _ := bits.Div64(hi, lo, c)
	return q
}

// divisor divides non-negative int64s by a fixed d > 0 with a float
// multiplication and one correction step, as GCRA's quo does.
type divisor struct {
	d   int64
	inv float64
}

func newDivisor(d int64) divisor { return divisor{d: d, inv: 1 / float64(d)} }

// quo returns floor(x/d) for 0 ≤ x; exact for quotients below 2^50, and it
// divides for larger ones.
func (v divisor) quo(x int64) int64 {
	q := int64(float64(x) * v.inv)
	if q >= 1<<50 {
		return x / v.d
	}
	if q*v.d > x {
		q--
	} else if (q+1)*v.d <= x {
		q++
	}
	return q
}

// checkWindow validates the parameters of a window algorithm.
func checkWindow(name string, limit int64, max int64, window time.Duration) error {
	if limit < 1 || limit > max {
		return fmt.Errorf("%w: %s limit %d (want 1 to %d requests per window)", errs.InvalidLimitCount, name, limit, max)
	}
	if window <= 0 || window > MaxWindow {
		return fmt.Errorf("%w: %s window %v (want 0 < window ≤ %v)", errs.InvalidWindow, name, window, MaxWindow)
	}
	return nil
}

// State tags: the first byte of an encoded state of the algorithms that
// have one, so that a store or a snapshot taken under another algorithm is
// refused rather than misread.
const (
	tagTokenBucket   = 'T'
	tagLeakyBucket   = 'Q'
	tagSlidingLog    = 'L'
	tagSlidingWindow = 'S'
	tagFixedWindow   = 'F'
)

// stateError reports an undecodable state.
func stateError(name string, b []byte, want string) error {
	return fmt.Errorf("%w: %s state is %s, got %d bytes", errs.InvalidState, name, want, len(b))
}
