package algorithm_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
	_ "time/tzdata" // the zones the tests use, on machines without a zoneinfo database

	"github.com/fluxlimiter/flux/algorithm"
)

func mustFixedWindow(t testing.TB, limit int64, w time.Duration) algorithm.FixedWindow {
	t.Helper()
	f, err := algorithm.NewFixedWindow(limit, w)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func mustCalendarWindow(t testing.TB, limit int64, unit algorithm.Calendar, zone string) algorithm.FixedWindow {
	t.Helper()
	f, err := algorithm.NewCalendarWindow(limit, unit, mustZone(t, zone))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func mustZone(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// Textbook behaviour: 3 per 10 s aligned to the epoch, including the
// boundary burst that is the fixed window's known weakness.
func TestFixedWindowTable(t *testing.T) {
	W := 10 * time.Second
	f := mustFixedWindow(t, 3, W)
	h := newHarness(t, f, nil, int64(W))
	base := floorTo(t0, int64(W))
	s := f.Fresh(base)
	type want struct {
		at        time.Duration
		cost      int64
		ok        bool
		remaining int
		retry     time.Duration
		reset     time.Duration
	}
	for i, w := range []want{
		{2 * time.Second, 0, true, 3, 0, 0},
		{2 * time.Second, 2, true, 1, 0, 8 * time.Second},
		{9 * time.Second, 1, true, 0, 0, time.Second},
		{9 * time.Second, 1, false, 0, time.Second, time.Second},
		{10*time.Second - 1, 1, false, 0, 1, 1},
		{10 * time.Second, 3, true, 0, 0, 10 * time.Second}, // a new window: 4 admitted within 1 s
		{19 * time.Second, 2, false, 0, time.Second, time.Second},
		{45 * time.Second, 0, true, 3, 0, 0},
	} {
		var d algorithm.Decision
		s, d = h.step(s, base+int64(w.at), w.cost)
		if d.Allowed != w.ok || d.Remaining != w.remaining || d.RetryAfter != w.retry || d.ResetAfter != w.reset || d.Limit != 3 {
			t.Fatalf("step %d (cost %d at %v): got %s, want %+v", i, w.cost, w.at, describe(d), w)
		}
	}
}

// Calendar windows follow the zone's clocks, daylight saving time included.
func TestFixedWindowCalendar(t *testing.T) {
	paris := mustZone(t, "Europe/Paris")
	ny := mustZone(t, "America/New_York")
	at := func(loc *time.Location, s string) int64 {
		tm, err := time.ParseInLocation("2006-01-02 15:04:05 MST", s, loc)
		if err != nil {
			// Some abbreviations are ambiguous to the parser: accept offsets.
			tm, err = time.Parse("2006-01-02 15:04:05 -0700", s)
			if err != nil {
				t.Fatal(err)
			}
		}
		return tm.UnixNano()
	}
	for _, c := range []struct {
		name       string
		unit       algorithm.Calendar
		loc        *time.Location
		now        string
		start, end string
	}{
		{"day", algorithm.Day, paris, "2025-07-14 12:00:00 +0200", "2025-07-14 00:00:00 +0200", "2025-07-15 00:00:00 +0200"},
		{"spring-forward day is 23 h", algorithm.Day, paris, "2025-03-30 12:00:00 +0200", "2025-03-30 00:00:00 +0100", "2025-03-31 00:00:00 +0200"},
		{"fall-back day is 25 h", algorithm.Day, paris, "2025-10-26 12:00:00 +0100", "2025-10-26 00:00:00 +0200", "2025-10-27 00:00:00 +0100"},
		{"week from Monday", algorithm.Week, paris, "2025-03-14 15:00:00 +0100", "2025-03-10 00:00:00 +0100", "2025-03-17 00:00:00 +0100"},
		{"week across the new year", algorithm.Week, paris, "2025-12-31 23:00:00 +0100", "2025-12-29 00:00:00 +0100", "2026-01-05 00:00:00 +0100"},
		{"Sunday belongs to the week before", algorithm.Week, paris, "2025-03-16 23:59:59 +0100", "2025-03-10 00:00:00 +0100", "2025-03-17 00:00:00 +0100"},
		{"month", algorithm.Month, paris, "2025-02-14 00:00:00 +0100", "2025-02-01 00:00:00 +0100", "2025-03-01 00:00:00 +0100"},
		{"month across DST", algorithm.Month, paris, "2025-03-31 23:00:00 +0200", "2025-03-01 00:00:00 +0100", "2025-04-01 00:00:00 +0200"},
		{"hour", algorithm.Hour, ny, "2025-07-04 09:30:00 -0400", "2025-07-04 09:00:00 -0400", "2025-07-04 10:00:00 -0400"},
		{"first 1 am hour", algorithm.Hour, ny, "2025-11-02 01:30:00 -0400", "2025-11-02 01:00:00 -0400", "2025-11-02 01:00:00 -0500"},
		{"second 1 am hour", algorithm.Hour, ny, "2025-11-02 01:30:00 -0500", "2025-11-02 01:00:00 -0500", "2025-11-02 02:00:00 -0500"},
		{"minute", algorithm.Minute, ny, "2025-07-04 09:30:59 -0400", "2025-07-04 09:30:00 -0400", "2025-07-04 09:31:00 -0400"},
	} {
		f, err := algorithm.NewCalendarWindow(5, c.unit, c.loc)
		if err != nil {
			t.Fatal(err)
		}
		now := at(c.loc, c.now)
		start, end := f.Bounds(now)
		if start != at(c.loc, c.start) || end != at(c.loc, c.end) {
			t.Errorf("%s: window of %s is [%s, %s), want [%s, %s)", c.name, c.now,
				time.Unix(0, start).In(c.loc), time.Unix(0, end).In(c.loc), c.start, c.end)
		}
		// The denial at the window's last request says exactly when it ends.
		s, _, _ := f.Step(f.Fresh(now), now, 5)
		if _, d, _ := f.Step(s, now, 1); d.Allowed || d.RetryAfter != time.Duration(end-now) || d.ResetAfter != d.RetryAfter {
			t.Errorf("%s: %s", c.name, describe(d))
		}
	}
	// A nil location means UTC.
	f, err := algorithm.NewCalendarWindow(1, algorithm.Day, nil)
	if err != nil || f.Location() != time.UTC {
		t.Fatalf("nil location: %v, %v", f.Location(), err)
	}
}

// label names the window that contains t, as a person reading the zone's
// clocks would: minutes and hours with the UTC offset in force, days,
// ISO weeks and months by the local date.
func label(f algorithm.FixedWindow, t int64) string {
	if f.Calendar() == algorithm.Epoch {
		return fmt.Sprint(floorTo(t, f.Window()))
	}
	lt := time.Unix(0, t).In(f.Location())
	switch f.Calendar() {
	case algorithm.Minute:
		return lt.Format("2006-01-02T15:04 -0700")
	case algorithm.Hour:
		return lt.Format("2006-01-02T15 -0700")
	case algorithm.Day:
		return lt.Format("2006-01-02")
	case algorithm.Week:
		y, w := lt.ISOWeek()
		return fmt.Sprintf("%d-W%02d", y, w)
	}
	return lt.Format("2006-01")
}

var testZones = []string{"UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "America/Santiago", "America/Havana", "Pacific/Apia", "Asia/Tehran", "Pacific/Chatham"}

// Bounds agrees with the labels around every transition of several zones
// with odd rules (30-minute DST, +05:45, DST at midnight, a skipped day).
func TestFixedWindowBoundsAcrossTransitions(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, zone := range testZones {
		loc := mustZone(t, zone)
		for unit := algorithm.Minute; unit <= algorithm.Month; unit++ {
			f, err := algorithm.NewCalendarWindow(1, unit, loc)
			if err != nil {
				t.Fatal(err)
			}
			// Instants near each transition from 2010 to 2030.
			var instants []int64
			tm := time.Date(2010, 1, 1, 0, 0, 0, 0, loc)
			for tm.Year() < 2030 {
				_, end := tm.ZoneBounds()
				if end.IsZero() {
					break
				}
				for _, d := range []time.Duration{-25 * time.Hour, -time.Hour - time.Minute, -time.Minute, -1, 0, 1, time.Minute, 30 * time.Minute, time.Hour + time.Second, 23 * time.Hour} {
					instants = append(instants, end.Add(d).UnixNano())
				}
				tm = end
			}
			for range 50 {
				instants = append(instants, time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()+r.Int64N(int64(20*365*24*time.Hour)))
			}
			for _, now := range instants {
				start, end := f.Bounds(now)
				l := label(f, now)
				if !(start <= now && now < end) || label(f, start) != l || label(f, end-1) != l || label(f, end) == l {
					t.Fatalf("%s %v: window of %s is [%s, %s)", zone, unit,
						time.Unix(0, now).In(loc), time.Unix(0, start).In(loc), time.Unix(0, end).In(loc))
				}
			}
		}
	}
}

// refFixed counts requests per label; the end of a window is found by
// searching for the next label.
type refFixed struct {
	f      algorithm.FixedWindow
	limit  int64
	counts map[string]int64
}

func (r *refFixed) end(now int64) int64 {
	l := label(r.f, now)
	return now + search(1, int64(40*24*time.Hour)+2*max(r.f.Window(), 1), func(x int64) bool { return label(r.f, now+x) != l })
}

func (r *refFixed) check(now, cost int64) algorithm.Decision {
	n := r.counts[label(r.f, now)]
	c := max(cost, 1)
	d := algorithm.Decision{Limit: int(r.limit), Remaining: int(min(max(r.limit-n, 0), r.limit))}
	if n+c > r.limit {
		d.RetryAfter = time.Duration(r.end(now) - now)
		d.ResetAfter = d.RetryAfter
		return d
	}
	d.Allowed = true
	if cost > 0 {
		n += cost
		r.counts[label(r.f, now)] = n
		d.Remaining = int(r.limit - n)
	}
	if n > 0 {
		d.ResetAfter = time.Duration(r.end(now) - now)
	}
	return d
}

// windowUnit is the typical length of f's windows, to scale time steps.
func windowUnit(f algorithm.FixedWindow) int64 {
	switch f.Calendar() {
	case algorithm.Epoch:
		return f.Window()
	case algorithm.Minute:
		return int64(time.Minute)
	case algorithm.Hour:
		return int64(time.Hour)
	case algorithm.Day:
		return int64(24 * time.Hour)
	case algorithm.Week:
		return int64(7 * 24 * time.Hour)
	}
	return int64(30 * 24 * time.Hour)
}

func runFixedWindow(t testing.TB, fs [2]algorithm.FixedWindow, start int64, prog []byte) {
	cur := 0
	now := start
	h := newHarness(t, fs[0], nil, windowUnit(fs[0]))
	s := fs[0].Fresh(now)
	ref := &refFixed{f: fs[0], limit: fs[0].Capacity(), counts: map[string]int64{}}
	for i, o := range decodeOps(prog) {
		f := fs[cur]
		switch o.kind {
		case 0:
			now += advance(o, windowUnit(f))
		case 1:
			cost := int64(o.a) % (f.Capacity() + 1)
			var d algorithm.Decision
			s, d = h.step(s, now, cost)
			if dr := ref.check(now, cost); d != dr {
				t.Fatalf("op %d: cost %d at %s: fixed window %s, reference %s (state %+v)", i, cost, time.Unix(0, now).UTC(), describe(d), describe(dr), s)
			}
		case 2:
			at := now - int64(o.b)*windowUnit(f)/64
			cost := int64(o.a) % (2*f.Capacity() + 1)
			s = h.apply(s, at, now, cost)
			ref.counts[label(f, at)] += cost
		case 3:
			next := 1 - cur
			_, before, _ := fs[cur].Step(s, now, 0)
			s = fs[next].Rebase(s, now, fs[cur])
			cur = next
			h = newHarness(t, fs[cur], nil, windowUnit(fs[cur]))
			_, after, _ := fs[cur].Step(s, now, 0)
			// The count of the current window is kept.
			want := max(after.Limit-(before.Limit-before.Remaining), 0)
			if after.Remaining > want || before.Remaining > 0 && after.Remaining != want {
				t.Fatalf("op %d: rebase: %s → %s, want Remaining %d", i, describe(before), describe(after), want)
			}
			ref = &refFixed{f: fs[cur], limit: fs[cur].Capacity(), counts: map[string]int64{}}
			if s.Count > 0 && now < s.End {
				ref.counts[label(fs[cur], now)] = s.Count
			}
		}
	}
}

func TestFixedWindowReference(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	epoch := [][2]algorithm.FixedWindow{
		{mustFixedWindow(t, 3, 10*time.Second), mustFixedWindow(t, 5, 10*time.Second)},
		{mustFixedWindow(t, 1, time.Second), mustFixedWindow(t, 4, time.Minute)},
		{mustFixedWindow(t, 100, 24*time.Hour), mustFixedWindow(t, 10, time.Hour)},
		{mustFixedWindow(t, 7, 3), mustFixedWindow(t, 2, 5)},
	}
	for _, fs := range epoch {
		for range 20 {
			runFixedWindow(t, fs, t0, randomOps(r, 120))
		}
	}
	for _, zone := range testZones[:6] {
		for unit := algorithm.Minute; unit <= algorithm.Month; unit++ {
			fs := [2]algorithm.FixedWindow{mustCalendarWindow(t, 4, unit, zone), mustCalendarWindow(t, 6, (unit%algorithm.Month)+1, "UTC")}
			for range 3 {
				// Start near a DST change: late March.
				runFixedWindow(t, fs, time.Date(2025, 3, 29, 20, 0, 0, 0, time.UTC).UnixNano(), randomOps(r, 80))
			}
		}
	}
}

func FuzzFixedWindow(f *testing.F) {
	f.Add(uint16(3), uint8(0), uint32(10_000), uint8(0), []byte("\x01\x01\x00\x01\x01\x00\x00\x01\x10"))
	f.Add(uint16(3), uint8(3), uint32(0), uint8(1), []byte("\x01\x01\x00\x00\xff\xff\x01\x01\x00\x03\x00\x00\x01\x02\x00"))
	f.Fuzz(func(t *testing.T, limit uint16, unit uint8, windowMs uint32, zone uint8, prog []byte) {
		l := int64(limit%100) + 1
		var fs [2]algorithm.FixedWindow
		if u := algorithm.Calendar(unit % 6); u == algorithm.Epoch {
			w := time.Duration(windowMs%86_400_000+1) * time.Millisecond
			fs = [2]algorithm.FixedWindow{mustFixedWindow(t, l, w), mustFixedWindow(t, l+1, w*2)}
		} else {
			z := testZones[int(zone)%len(testZones)]
			fs = [2]algorithm.FixedWindow{mustCalendarWindow(t, l, u, z), mustFixedWindow(t, l, time.Hour)}
		}
		runFixedWindow(t, fs, t0, prog)
	})
}
