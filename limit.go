package flux

import (
	"time"

	"github.com/fluxlimiter/flux/algorithm"
)

// Limit is a rate limit: an algorithm and its parameters.
//
// Algorithm selects the algorithm; the zero value is GCRA (docs/ALGORITHMS.md
// compares them all). GCRA, TokenBucket and LeakyBucket take Rate and Burst;
// SlidingWindowLog, SlidingWindow and FixedWindow take Limit and Window
// (FixedWindow may take Calendar and Location instead of Window). Fields the
// chosen algorithm does not take must be left zero: Validate reports them
// rather than ignore them.
//
// Rate is in requests per second, with 0 < Rate ≤ 1e9. Burst is the number
// of requests admitted beyond the steady rate, ≥ 0, and may be fractional.
// Internally the emission interval T is 1e9/Rate nanoseconds rounded to the
// nearest nanosecond and the tolerance τ is Burst·T rounded down. The
// rounding of T changes the effective rate by a relative error of at most
// 0.5/T = Rate/2e9: none below 1e3/s, under 0.05% at 1e6/s, up to 5% at
// 1e8/s and up to 50% near 1e9/s (T = 1 or 2 ns). The capacity after idle is
// floor(Burst) + 1 (the leaky bucket's queue holds floor(Burst)+1 requests).
//
// Limit is the number of requests admitted per window, from 1 to 2^31−1
// (65536 for the sliding window log, which keeps a timestamp per request),
// and is the capacity. Window is the window's length, up to about 146
// years; fixed windows of a given length are aligned to the Unix epoch.
type Limit struct {
	// Algorithm is the algorithm; "" means GCRA.
	Algorithm Algorithm
	// Rate is in requests per second (GCRA, token and leaky bucket).
	Rate float64
	// Burst is the requests admitted beyond the steady rate (GCRA, token
	// and leaky bucket).
	Burst float64
	// Limit is the requests admitted per window (window algorithms).
	Limit int
	// Window is the window's length (window algorithms).
	Window time.Duration
	// Calendar, instead of Window, aligns fixed windows to calendar
	// minutes, hours, days, weeks (from Monday) or months in Location.
	Calendar Calendar
	// Location is the time zone of Calendar windows; nil means UTC.
	Location *time.Location
}

// Capacity returns the requests a fresh key admits at once — floor(Burst)+1
// for GCRA and the buckets, Limit for the window algorithms — or 0 if the
// limit is invalid.
func (l Limit) Capacity() int {
	c, _, err := l.compile()
	if err != nil {
		return 0
	}
	return int(c)
}

// Validate reports whether the limit is usable; the error wraps
// ErrInvalidAlgorithm, ErrInvalidRate, ErrInvalidBurst, ErrInvalidLimit or
// ErrInvalidWindow.
func (l Limit) Validate() error {
	_, _, err := l.compile()
	return err
}

// Decision is the answer to a check: Allowed, Limit, Remaining, RetryAfter,
// ResetAfter and Delay, documented on algorithm.Decision. A denial is a
// Decision with Allowed false, never an error. It is an alias so that
// shards can write decisions straight into a caller's slice.
type Decision = algorithm.Decision
