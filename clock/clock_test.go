package clock

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func TestSystemAnchoredAndMonotonic(t *testing.T) {
	c := NewSystem()
	a, err := c.Now()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Duration(a - time.Now().UnixNano()); d > time.Second || d < -time.Second {
		t.Fatalf("System reads %v away from wall time", d)
	}
	prev := a
	for range 10000 {
		n, _ := c.Now()
		if n < prev {
			t.Fatalf("System went backwards: %d after %d", n, prev)
		}
		prev = n
	}
}

func TestManual(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	m := NewManual(start)
	if n, err := m.Now(); err != nil || n != start.UnixNano() {
		t.Fatalf("Now = %d, %v", n, err)
	}
	m.Advance(1500 * time.Millisecond)
	if n, _ := m.Now(); n != start.Add(1500*time.Millisecond).UnixNano() {
		t.Fatalf("after Advance: %d", n)
	}
	m.Set(start.Add(-time.Hour))
	if n, _ := m.Now(); n != start.Add(-time.Hour).UnixNano() {
		t.Fatalf("after Set: %d", n)
	}
	boom := errors.New("boom")
	m.Fail(boom)
	if _, err := m.Now(); !errors.Is(err, boom) {
		t.Fatalf("after Fail: %v", err)
	}
	m.Fail(nil)
	if _, err := m.Now(); !errors.Is(err, ErrManualFailure) {
		t.Fatalf("after Fail(nil): %v", err)
	}
	m.Recover()
	if _, err := m.Now(); err != nil {
		t.Fatalf("after Recover: %v", err)
	}
}

func TestManualConcurrent(t *testing.T) {
	m := NewManual(time.Unix(0, 0))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				m.Advance(time.Nanosecond)
				if _, err := m.Now(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n, _ := m.Now(); n != 4000 {
		t.Fatalf("4×1000 concurrent advances of 1ns gave %d", n)
	}
}

func TestFunc(t *testing.T) {
	c := Func(func() (int64, error) { return 42, nil })
	if n, err := c.Now(); n != 42 || err != nil {
		t.Fatalf("Func.Now = %d, %v", n, err)
	}
}
