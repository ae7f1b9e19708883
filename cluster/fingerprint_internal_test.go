package cluster

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the same zones in every process, whatever the machine has

	flux "github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
)

// fingerprintOf registers limits (name → limit, all strict) on a fresh
// Coordinator and returns its fingerprint.
func fingerprintOf(t *testing.T, limits map[string]flux.Limit) uint64 {
	t.Helper()
	b, err := bus.NewNetwork().Join("fp")
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(b, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	for name, l := range limits {
		lim, err := flux.New(l)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = lim.Close() }()
		if err := c.Register(name, lim, LimiterConfig{Mode: Strict}); err != nil {
			t.Fatal(err)
		}
	}
	return c.fingerprint()
}

// fingerprintLimits are limits of every kind, the calendar one in a zone
// loaded from the tz database: a *time.Location of its own in each process
// and at each load.
func fingerprintLimits(t *testing.T) map[string]flux.Limit {
	t.Helper()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	return map[string]flux.Limit{
		"api":   {Rate: 100, Burst: 20},
		"daily": {Algorithm: flux.FixedWindow, Requests: 1000, Calendar: flux.CalendarDay, Location: ny},
		"log":   {Algorithm: flux.SlidingWindowLog, Requests: 10, Window: time.Minute},
	}
}

// TestFingerprintSameAcrossProcesses computes the fingerprint of one
// configuration in this process and in a child process (this test binary
// run again): they must be equal, as on two nodes.
func TestFingerprintSameAcrossProcesses(t *testing.T) {
	if os.Getenv("FLUX_FINGERPRINT_CHILD") != "" {
		fmt.Printf("fingerprint=%d\n", fingerprintOf(t, fingerprintLimits(t)))
		return
	}
	ours := fingerprintOf(t, fingerprintLimits(t))
	// Loaded again: another *time.Location, same zone.
	if again := fingerprintOf(t, fingerprintLimits(t)); again != ours {
		t.Fatalf("same config, another *time.Location: fingerprint %x, want %x", again, ours)
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestFingerprintSameAcrossProcesses$", "-test.count=1")
	cmd.Env = append(os.Environ(), "FLUX_FINGERPRINT_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var theirs uint64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "fingerprint="); ok {
			if theirs, err = strconv.ParseUint(v, 10, 64); err != nil {
				t.Fatal(err)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("child printed no fingerprint:\n%s", out)
	}
	if theirs != ours {
		t.Fatalf("another process computed fingerprint %x, this one %x", theirs, ours)
	}
}

// TestCanonicalLimitCoversEveryField changes each field of flux.Limit in
// turn: the canonical form must change with it, except where the two
// values mean the same limit.
func TestCanonicalLimitCoversEveryField(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	base := flux.Limit{Rate: 1, Burst: 2, Requests: 3, Window: time.Second, Calendar: flux.CalendarDay}
	changes := map[string]func(*flux.Limit){
		"Algorithm": func(l *flux.Limit) { l.Algorithm = flux.TokenBucket },
		"Rate":      func(l *flux.Limit) { l.Rate = 1.5 },
		"Burst":     func(l *flux.Limit) { l.Burst = 2.25 },
		"Requests":  func(l *flux.Limit) { l.Requests = 4 },
		//lint:ignore SA1019 the deprecated spelling of Requests must count
		"Limit":    func(l *flux.Limit) { l.Requests, l.Limit = 0, 4 },
		"Window":   func(l *flux.Limit) { l.Window = time.Second + 1 },
		"Calendar": func(l *flux.Limit) { l.Calendar = flux.CalendarWeek },
		"Location": func(l *flux.Limit) { l.Location = paris },
	}
	typ := reflect.TypeFor[flux.Limit]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		change, ok := changes[f.Name]
		if !ok {
			t.Errorf("flux.Limit.%s is not in canonicalLimit's test: add it to canonicalLimit and here", f.Name)
			continue
		}
		l := base
		change(&l)
		if canonicalLimit(l) == canonicalLimit(base) {
			t.Errorf("changing %s leaves the canonical form %q", f.Name, canonicalLimit(l))
		}
	}
	if len(changes) != typ.NumField() {
		t.Errorf("the test changes %d fields, flux.Limit has %d", len(changes), typ.NumField())
	}
	// Spellings of one limit.
	same := [][2]flux.Limit{
		{{Rate: 10, Burst: 5}, {Algorithm: flux.GCRA, Rate: 10, Burst: 5}},
		{{Algorithm: flux.FixedWindow, Requests: 5, Calendar: flux.CalendarDay}, {Algorithm: flux.FixedWindow, Requests: 5, Calendar: flux.CalendarDay, Location: time.UTC}},
		{{Algorithm: flux.FixedWindow, Limit: 5, Window: time.Second}, {Algorithm: flux.FixedWindow, Requests: 5, Window: time.Second}},
	}
	for _, p := range same {
		if a, b := canonicalLimit(p[0]), canonicalLimit(p[1]); a != b {
			t.Errorf("one limit, two canonical forms: %q and %q", a, b)
		}
	}
	if got, want := canonicalLimit(flux.Limit{Rate: 100, Burst: 20}), `algorithm=gcra rate=100 burst=20 limit=0 window=0 calendar="" location="UTC"`; got != want {
		t.Errorf("canonicalLimit = %s, want %s", got, want)
	}
}
