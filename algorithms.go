package flux

import (
	"fmt"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/internal/errs"
)

// Algorithm names a rate-limiting algorithm: the value of Limit.Algorithm,
// and of `algorithm:` in flux-node's configuration. The zero value "" means
// GCRA. docs/ALGORITHMS.md compares them on one timeline and says how to
// choose.
type Algorithm string

// The algorithms. GCRA, TokenBucket and LeakyBucket take Limit.Rate and
// Limit.Burst; SlidingWindowLog, SlidingWindow and FixedWindow take
// Limit.Requests and Limit.Window (or, for FixedWindow, Limit.Calendar).
const (
	// GCRA is the generic cell rate algorithm as FluxLimiter defines it (the
	// default): Burst+1 requests at once after idle, then one every 1/Rate
	// seconds.
	GCRA Algorithm = "gcra"
	// TokenBucket is a bucket of Burst+1 tokens refilled at Rate per second.
	// With the same Rate and Burst it admits exactly what GCRA admits; its
	// state is kept as tokens.
	TokenBucket Algorithm = "token-bucket"
	// LeakyBucket is a queue of floor(Burst)+1 requests drained at Rate per
	// second: an admitted request's Decision.Delay says how long to wait
	// before acting so that requests leave at exactly Rate.
	LeakyBucket Algorithm = "leaky-bucket"
	// SlidingWindowLog admits at most Limit requests in any interval of
	// length Window, exactly, keeping a log of admission times per key (8
	// bytes per request in the window).
	SlidingWindowLog Algorithm = "sliding-window-log"
	// SlidingWindow approximates the sliding window log with two counters
	// per key (the current and the previous window, the latter weighted);
	// docs/ALGORITHMS.md states its error bound.
	SlidingWindow Algorithm = "sliding-window"
	// FixedWindow admits Limit requests per window, windows of a fixed
	// length aligned to the Unix epoch or calendar units in a time zone.
	FixedWindow Algorithm = "fixed-window"
)

// algorithms lists every algorithm, GCRA first.
var algorithms = []Algorithm{GCRA, TokenBucket, LeakyBucket, SlidingWindowLog, SlidingWindow, FixedWindow}

// Windowed reports whether a takes Requests and Window (the window
// algorithms) rather than Rate and Burst. It is false for unknown names.
func (a Algorithm) Windowed() bool {
	return a == SlidingWindowLog || a == SlidingWindow || a == FixedWindow
}

// Calendar is a calendar unit fixed windows are aligned to (Limit.Calendar),
// in Limit.Location.
type Calendar string

// Calendar units. Minute and hour windows follow the zone's clocks (a
// change of UTC offset also ends one); day windows run from local midnight
// to local midnight (23 or 25 hours on days the clocks change); weeks start
// on Monday (ISO 8601); months on the first.
const (
	CalendarMinute Calendar = "minute"
	CalendarHour   Calendar = "hour"
	CalendarDay    Calendar = "day"
	CalendarWeek   Calendar = "week"
	CalendarMonth  Calendar = "month"
)

var calendarUnits = map[Calendar]algorithm.Calendar{
	CalendarMinute: algorithm.Minute,
	CalendarHour:   algorithm.Hour,
	CalendarDay:    algorithm.Day,
	CalendarWeek:   algorithm.Week,
	CalendarMonth:  algorithm.Month,
}

// algorithm returns the limit's algorithm, "" read as GCRA.
func (l Limit) algorithm() Algorithm {
	if l.Algorithm == "" {
		return GCRA
	}
	return l.Algorithm
}

// checkFields rejects parameters the chosen algorithm does not take, so that
// a limit is never silently different from what its author wrote.
func (l Limit) checkFields() error {
	if l.Limit != 0 { // left by normalized: it differs from Requests
		return fmt.Errorf("%w: Requests %d and the deprecated Limit %d differ: set Requests only", ErrInvalidLimit, l.Requests, l.Limit)
	}
	a := l.algorithm()
	switch a {
	case GCRA, TokenBucket, LeakyBucket:
		if l.Requests != 0 {
			return fmt.Errorf("%w: %s takes Rate and Burst, not Requests (%d)", ErrInvalidLimit, a, l.Requests)
		}
		if l.Window != 0 || l.Calendar != "" || l.Location != nil {
			return fmt.Errorf("%w: %s takes Rate and Burst, not Window, Calendar or Location", errs.InvalidWindow, a)
		}
	case SlidingWindowLog, SlidingWindow, FixedWindow:
		if l.Rate != 0 {
			return fmt.Errorf("%w: %s takes Requests and Window, not Rate (%v)", errs.InvalidRate, a, l.Rate)
		}
		if l.Burst != 0 {
			return fmt.Errorf("%w: %s takes Requests and Window, not Burst (%v)", errs.InvalidBurst, a, l.Burst)
		}
		switch {
		case a != FixedWindow && (l.Calendar != "" || l.Location != nil):
			return fmt.Errorf("%w: only %s aligns to a Calendar in a Location", errs.InvalidWindow, FixedWindow)
		case l.Calendar != "" && l.Window != 0:
			return fmt.Errorf("%w: set Window (%v) or Calendar (%q), not both", errs.InvalidWindow, l.Window, l.Calendar)
		case l.Calendar == "" && l.Location != nil:
			return fmt.Errorf("%w: Location is for Calendar windows", errs.InvalidWindow)
		}
	default:
		return fmt.Errorf("%w: %q (want one of %v)", errs.InvalidAlgorithm, string(l.Algorithm), algorithms)
	}
	return nil
}

// compile validates the limit and returns its capacity and a function that
// starts the group of shards for it: each algorithm gets a group of its own
// per-key state type.
func (l Limit) compile() (capacity int64, start func(options) engine, err error) {
	l = l.normalized()
	if err := l.checkFields(); err != nil {
		return 0, nil, err
	}
	switch l.algorithm() {
	case TokenBucket:
		return compiled(l, compileTokenBucket)
	case LeakyBucket:
		return compiled(l, compileLeakyBucket)
	case SlidingWindowLog:
		return compiled(l, compileSlidingLog)
	case SlidingWindow:
		return compiled(l, compileSlidingWindow)
	case FixedWindow:
		return compiled(l, compileFixedWindow)
	}
	return compiled(l, compileGCRA)
}

func compiled[S any](l Limit, compile func(Limit) (algorithm.Algorithm[S], error)) (int64, func(options) engine, error) {
	alg, err := compile(l)
	if err != nil {
		return 0, nil, err
	}
	return alg.Capacity(), func(o options) engine { return newGroup(alg, o, compile) }, nil
}

// The compile functions build one algorithm from a validated limit. A
// running group compiles the limits SetLimit gives it with the same
// function, so a limit of another algorithm fails there with
// ErrAlgorithmChange.

func compileGCRA(l Limit) (algorithm.Algorithm[int64], error) {
	if err := sameAlgorithm(GCRA, l); err != nil {
		return nil, err
	}
	g, err := algorithm.NewGCRA(l.Rate, l.Burst)
	if err != nil {
		return nil, err
	}
	return g, nil
}

func compileTokenBucket(l Limit) (algorithm.Algorithm[algorithm.TokenState], error) {
	if err := sameAlgorithm(TokenBucket, l); err != nil {
		return nil, err
	}
	b, err := algorithm.NewTokenBucket(l.Rate, l.Burst)
	if err != nil {
		return nil, err
	}
	return b, nil
}

func compileLeakyBucket(l Limit) (algorithm.Algorithm[int64], error) {
	if err := sameAlgorithm(LeakyBucket, l); err != nil {
		return nil, err
	}
	q, err := algorithm.NewLeakyBucket(l.Rate, l.Burst)
	if err != nil {
		return nil, err
	}
	return q, nil
}

func compileSlidingLog(l Limit) (algorithm.Algorithm[[]int64], error) {
	if err := sameAlgorithm(SlidingWindowLog, l); err != nil {
		return nil, err
	}
	sl, err := algorithm.NewSlidingLog(int64(l.Requests), l.Window)
	if err != nil {
		return nil, err
	}
	return sl, nil
}

func compileSlidingWindow(l Limit) (algorithm.Algorithm[algorithm.SlidingState], error) {
	if err := sameAlgorithm(SlidingWindow, l); err != nil {
		return nil, err
	}
	sw, err := algorithm.NewSlidingWindow(int64(l.Requests), l.Window)
	if err != nil {
		return nil, err
	}
	return sw, nil
}

func compileFixedWindow(l Limit) (algorithm.Algorithm[algorithm.FixedState], error) {
	if err := sameAlgorithm(FixedWindow, l); err != nil {
		return nil, err
	}
	var f algorithm.FixedWindow
	var err error
	if l.Calendar != "" {
		unit, ok := calendarUnits[l.Calendar]
		if !ok {
			return nil, fmt.Errorf("%w: calendar %q (want minute, hour, day, week or month)", errs.InvalidWindow, string(l.Calendar))
		}
		f, err = algorithm.NewCalendarWindow(int64(l.Requests), unit, l.Location)
	} else {
		f, err = algorithm.NewFixedWindow(int64(l.Requests), l.Window)
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

// sameAlgorithm reports ErrAlgorithmChange if l is not a limit for want.
func sameAlgorithm(want Algorithm, l Limit) error {
	if got := l.algorithm(); got != want {
		return fmt.Errorf("%w: the limiter runs %s, the new limit is %s", ErrAlgorithmChange, want, got)
	}
	return nil
}
