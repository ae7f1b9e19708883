package algorithm

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/fluxlimiter/flux/internal/errs"
)

// Calendar is what a fixed window is aligned to.
type Calendar uint8

// Calendar units. Epoch windows have a fixed length and are aligned to the
// Unix epoch (so a 24h window runs from 00:00 UTC); the others follow the
// calendar of a time zone.
const (
	// Epoch: windows of a fixed length, aligned to the Unix epoch.
	Epoch Calendar = iota
	// Minute: from one minute to the next on the zone's clocks.
	Minute
	// Hour: from one hour to the next on the zone's clocks.
	Hour
	// Day: from midnight to midnight (23 or 25 hours on the days the zone
	// moves its clocks).
	Day
	// Week: from Monday 00:00 to the next Monday 00:00 (ISO 8601 weeks).
	Week
	// Month: from the first of the month 00:00 to the first of the next.
	Month
)

var calendarNames = [...]string{Epoch: "epoch", Minute: "minute", Hour: "hour", Day: "day", Week: "week", Month: "month"}

// String returns the unit's name: "epoch", "minute", "hour", "day", "week"
// or "month".
func (c Calendar) String() string {
	if int(c) < len(calendarNames) {
		return calendarNames[c]
	}
	return fmt.Sprintf("Calendar(%d)", c)
}

// FixedState is a fixed window's per-key state: the end of the window the
// count belongs to (Unix nanoseconds, exclusive) and the requests admitted
// in it. A zero Count means a fresh key.
type FixedState struct {
	End   int64
	Count int64
}

// FixedWindow is the fixed window counter: each key may have Limit
// requests admitted per window, and the count starts again from zero when
// a new window begins. Windows are either of a fixed length aligned to the
// Unix epoch, or calendar minutes, hours, days, weeks or months in a time
// zone ("1000 per calendar day in Europe/Paris").
//
// It is the cheapest algorithm and the easiest to explain, and the right
// one for quotas stated per calendar period. Its known weakness is the
// boundary: up to 2·Limit requests may be admitted in a short time around
// the end of a window (Limit at the end of one, Limit at the start of the
// next). The sliding window algorithms smooth that out.
//
// In minute and hour windows, a change of the zone's UTC offset (a daylight
// saving time change) also ends a window: the hour of 01:00–02:00 that
// occurs twice when clocks go back is two windows of one hour, not one of
// two. Day, week and month windows run from local midnight to local
// midnight, however long that is.
//
// A FixedWindow is safe for simultaneous use. Its zero value has capacity 0, so
// no request can pass; create one with NewFixedWindow or NewCalendarWindow.
type FixedWindow struct {
	limit int64
	w     int64 // window length, for Epoch
	unit  Calendar
	loc   *time.Location
}

// NewFixedWindow compiles limit requests per window of the given length,
// aligned to the Unix epoch (1 ≤ limit ≤ MaxWindowLimit; 0 < window ≤
// MaxWindow).
func NewFixedWindow(limit int64, window time.Duration) (FixedWindow, error) {
	if err := checkWindow("fixed-window", limit, MaxWindowLimit, window); err != nil {
		return FixedWindow{}, err
	}
	return FixedWindow{limit: limit, w: int64(window), unit: Epoch}, nil
}

// NewCalendarWindow compiles limit requests per calendar unit (Minute, Hour,
// Day, Week or Month) in loc (UTC if nil).
func NewCalendarWindow(limit int64, unit Calendar, loc *time.Location) (FixedWindow, error) {
	if unit < Minute || unit > Month {
		return FixedWindow{}, fmt.Errorf("%w: fixed-window calendar unit %v (want minute, hour, day, week or month)", errs.InvalidWindow, unit)
	}
	if err := checkWindow("fixed-window", limit, MaxWindowLimit, time.Minute); err != nil {
		return FixedWindow{}, err
	}
	if loc == nil {
		loc = time.UTC
	}
	return FixedWindow{limit: limit, unit: unit, loc: loc}, nil
}

// Name returns "fixed-window".
func (FixedWindow) Name() string { return "fixed-window" }

// Capacity returns Limit.
func (f FixedWindow) Capacity() int64 { return f.limit }

// Calendar returns the unit windows are aligned to.
func (f FixedWindow) Calendar() Calendar { return f.unit }

// Window returns the window length of Epoch windows (0 for calendar ones).
func (f FixedWindow) Window() int64 { return f.w }

// Location returns the time zone of calendar windows (nil for Epoch ones).
func (f FixedWindow) Location() *time.Location { return f.loc }

// Fresh returns the zero state: nothing counted.
func (FixedWindow) Fresh(int64) FixedState { return FixedState{} }

// Bounds returns the start (inclusive) and end (exclusive) of the window
// that contains now, in Unix nanoseconds.
func (f FixedWindow) Bounds(now int64) (start, end int64) {
	if f.unit == Epoch {
		start = alignDown(now, f.w)
		return start, addSat(start, f.w)
	}
	t := time.Unix(0, now).In(f.loc)
	var s, e time.Time
	switch f.unit {
	case Minute, Hour:
		u := int64(time.Minute)
		if f.unit == Hour {
			u = int64(time.Hour)
		}
		_, off := t.Zone()
		start = subSat(now, floorMod(addSat(now, int64(off)*int64(time.Second)), u))
		end = addSat(start, u)
		// A change of UTC offset inside the window ends it (or starts it).
		zs, ze := t.ZoneBounds()
		if !zs.IsZero() {
			if _, o := zs.Add(-1).Zone(); o != off {
				start = max(start, unixNanos(zs))
			}
		}
		if !ze.IsZero() {
			if _, o := ze.Zone(); o != off {
				end = min(end, unixNanos(ze))
			}
		}
		return guardBounds(start, end, now)
	case Day:
		y, m, d := t.Date()
		s, e = midnight(y, m, d, f.loc), midnight(y, m, d+1, f.loc)
	case Week:
		y, m, d := t.Date()
		d -= (int(t.Weekday()) + 6) % 7 // back to Monday
		s, e = midnight(y, m, d, f.loc), midnight(y, m, d+7, f.loc)
	default: // Month
		y, m, _ := t.Date()
		s, e = midnight(y, m, 1, f.loc), midnight(y, m+1, 1, f.loc)
	}
	return guardBounds(unixNanos(s), unixNanos(e), now)
}

// midnight returns the first instant of the local date y-m-d (normalised
// as time.Date does) in loc. Where the zone skips that midnight (clocks
// jump from 23:59:59 to 01:00), time.Date may resolve it to an instant of
// the day before; the day then starts at the transition that skips it.
func midnight(y int, m time.Month, d int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	wy, wm, wd := time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Date()
	if ty, tm, td := t.Date(); ty != wy || tm != wm || td != wd {
		if _, end := t.ZoneBounds(); !end.IsZero() {
			return end
		}
	}
	return t
}

// guardBounds makes sure start ≤ now < end whatever a time zone's rules do
// to local midnight (a midnight that occurs twice may resolve to either
// instant): an end at or before now becomes the next hour boundary in UTC,
// a short window that still limits rather than none at all.
func guardBounds(start, end, now int64) (int64, int64) {
	start = min(start, now)
	if end <= now {
		end = addSat(subSat(now, floorMod(now, int64(time.Hour))), int64(time.Hour))
		if end <= now {
			end = math.MaxInt64
		}
	}
	return start, end
}

// unixNanos returns t in Unix nanoseconds, saturated at the int64 bounds.
func unixNanos(t time.Time) int64 {
	if t.Before(minNanoTime) {
		return math.MinInt64
	}
	if t.After(maxNanoTime) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

var (
	minNanoTime = time.Unix(0, math.MinInt64)
	maxNanoTime = time.Unix(0, math.MaxInt64)
)

// floorMod returns a mod b in [0, b) for b > 0 (0 otherwise).
func floorMod(a, b int64) int64 {
	if b <= 0 {
		return 0
	}
	r := a % b
	if r < 0 {
		r += b
	}
	return r
}

// Step decides a request of the given cost at now.
func (f FixedWindow) Step(s FixedState, now, cost int64) (FixedState, Decision, bool) {
	var d Decision
	next, changed := f.StepInto(s, now, cost, &d)
	return next, d, changed
}

// StepInto is Step writing the decision into *d, which saves copying it
// on the shard's hot path (see StepperInto).
func (f FixedWindow) StepInto(s FixedState, now, cost int64, d *Decision) (FixedState, bool) {
	r := s
	if now >= s.End || s.Count <= 0 {
		_, end := f.Bounds(now)
		r = FixedState{End: end}
	}
	c := max(cost, 1)
	*d = Decision{Limit: int(f.limit)}
	if cost == 0 || addSat(r.Count, c) > f.limit {
		d.Remaining = int(min(max(f.limit-r.Count, 0), f.limit))
		d.ResetAfter = f.resetAfter(r, now)
		switch {
		case c > f.limit:
			d.RetryAfter = math.MaxInt64 // cost above capacity: never
		case addSat(r.Count, c) > f.limit:
			d.RetryAfter = durationOf(subSat(r.End, now))
		default:
			d.Allowed = true
		}
		return s, false
	}
	r.Count += cost
	d.Allowed = true
	d.Remaining = int(f.limit - r.Count)
	d.ResetAfter = durationOf(subSat(r.End, now))
	return r, true
}

func (f FixedWindow) resetAfter(r FixedState, now int64) time.Duration {
	if r.Count <= 0 {
		return 0
	}
	return durationOf(max(subSat(r.End, now), 0))
}

// Apply counts cost requests admitted elsewhere at time at, without
// deciding: in the key's current window, or in a later one (which then
// becomes current). Admissions in an earlier window no longer count.
func (f FixedWindow) Apply(s FixedState, at, cost int64) FixedState {
	if cost <= 0 {
		return s
	}
	_, end := f.Bounds(at)
	switch {
	case s.Count <= 0 || end > s.End:
		return FixedState{End: end, Count: cost}
	case end == s.End:
		s.Count = addSat(s.Count, cost)
	}
	return s
}

// IdleAt returns the end of the window the count belongs to.
func (f FixedWindow) IdleAt(s FixedState) int64 {
	if s.Count <= 0 {
		return math.MinInt64
	}
	return s.End
}

// Rebase keeps the count of the current window. When the windows change
// (another length, unit or zone), the count moves to the new window that
// contains now: the key keeps what it has used, and keeps it until that
// window ends. prev must be a FixedWindow.
func (f FixedWindow) Rebase(s FixedState, now int64, prev Algorithm[FixedState]) FixedState {
	p, ok := prev.(FixedWindow)
	if !ok || s.Count <= 0 || now >= s.End || f.sameWindows(p) {
		return s
	}
	_, end := f.Bounds(now)
	return FixedState{End: end, Count: s.Count}
}

func (f FixedWindow) sameWindows(p FixedWindow) bool {
	if f.unit != p.unit {
		return false
	}
	if f.unit == Epoch {
		return f.w == p.w
	}
	return f.loc == p.loc || f.loc.String() == p.loc.String()
}

// AppendState appends a tag byte, End and Count (big-endian): 17 bytes.
func (FixedWindow) AppendState(dst []byte, s FixedState) []byte {
	dst = binary.BigEndian.AppendUint64(append(dst, tagFixedWindow), uint64(s.End))
	return binary.BigEndian.AppendUint64(dst, uint64(s.Count))
}

// DecodeState reads what AppendState wrote.
func (FixedWindow) DecodeState(b []byte) (FixedState, error) {
	if len(b) != 17 || b[0] != tagFixedWindow {
		return FixedState{}, stateError("fixed-window", b, "17 bytes tagged 'F'")
	}
	return FixedState{End: int64(binary.BigEndian.Uint64(b[1:])), Count: int64(binary.BigEndian.Uint64(b[9:]))}, nil
}

var _ Algorithm[FixedState] = FixedWindow{}

var _ StepperInto[FixedState] = FixedWindow{}
