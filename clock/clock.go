// Package clock says where a limiter's "now" comes from.
//
// Flux measures time as Unix nanoseconds in an int64: nodes of a cluster
// exchange wall times, and the algorithms are pure functions of the time they
// are given. A Clock may fail; the limiter turns the failure into an error
// wrapping flux.ErrClock and never panics.
package clock

import (
	"errors"
	"sync/atomic"
	"time"
)

// Clock reports the current time as nanoseconds since the Unix epoch.
//
// Implementations must be safe for simultaneous use by multiple goroutines:
// every shard of a limiter reads the same Clock.
type Clock interface {
	Now() (int64, error)
}

// Func adapts an ordinary function to the Clock interface.
type Func func() (int64, error)

// Now calls f.
func (f Func) Now() (int64, error) { return f() }

// System is the default clock: wall time read once when it is created, then
// advanced by the monotonic clock, so it never runs backwards when the
// system's wall clock is stepped (NTP corrections, a manual change).
//
// A System is safe for simultaneous use. Its zero value is not usable; call
// NewSystem.
type System struct {
	wall  int64     // Unix nanoseconds at start
	start time.Time // carries the monotonic reading
}

// NewSystem returns a System clock anchored at the current wall time.
func NewSystem() *System {
	t := time.Now()
	return &System{wall: t.UnixNano(), start: t}
}

// Now returns the anchored wall time plus the monotonic time elapsed since
// the anchor. It never fails.
func (s *System) Now() (int64, error) {
	return s.wall + int64(time.Since(s.start)), nil
}

// ErrManualFailure is the error a Manual clock reports after Fail(nil).
var ErrManualFailure = errors.New("clock: manual failure")

// Manual is a clock that moves only when told to, for tests. It can also be
// made to fail on demand.
//
// A Manual is safe for simultaneous use: tests advance it from one goroutine
// while shards read it from others.
type Manual struct {
	now atomic.Int64
	err atomic.Pointer[error]
}

// NewManual returns a Manual clock reading start.
func NewManual(start time.Time) *Manual {
	m := &Manual{}
	m.now.Store(start.UnixNano())
	return m
}

// Now returns the clock's current reading, or the error set by Fail.
func (m *Manual) Now() (int64, error) {
	if e := m.err.Load(); e != nil {
		return 0, *e
	}
	return m.now.Load(), nil
}

// Advance moves the clock forward by d (backward if d is negative).
func (m *Manual) Advance(d time.Duration) { m.now.Add(int64(d)) }

// Set moves the clock to t.
func (m *Manual) Set(t time.Time) { m.now.Store(t.UnixNano()) }

// SetNanos moves the clock to the given Unix nanoseconds.
func (m *Manual) SetNanos(ns int64) { m.now.Store(ns) }

// Fail makes every later Now return err (ErrManualFailure if err is nil)
// until Recover is called.
func (m *Manual) Fail(err error) {
	if err == nil {
		err = ErrManualFailure
	}
	m.err.Store(&err)
}

// Recover undoes Fail: Now reports the time again.
func (m *Manual) Recover() { m.err.Store(nil) }
