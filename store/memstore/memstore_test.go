package memstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/memstore"
	"github.com/fluxlimiter/flux/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := memstore.New(memstore.Options{})
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestExpiry(t *testing.T) {
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	s := memstore.New(memstore.Options{Clock: clk, Margin: time.Second})
	ctx := t.Context()
	now, _ := clk.Now()
	g, _ := algorithm.NewGCRA(1, 0)
	if err := s.Save(ctx, "l", []store.Entry{
		{Key: "soon", State: []byte("s"), IdleAt: now + int64(time.Second)},
		{Key: "later", State: []byte("l"), IdleAt: now + int64(time.Hour)},
		{Key: "never", State: []byte("n"), IdleAt: store.NoExpiry},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CheckGCRA(ctx, "l", "g", g, now, 1); err != nil { // TAT = now + 1 s
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second) // IdleAt + margin reached, not passed
	if _, ok, _ := s.Load(ctx, "l", "soon"); !ok {
		t.Fatal("entry gone at IdleAt + margin; it must be kept until then")
	}
	clk.Advance(time.Nanosecond)
	if _, ok, _ := s.Load(ctx, "l", "soon"); ok {
		t.Fatal("entry still there after IdleAt + margin")
	}
	if n, err := s.Cleanup(ctx); err != nil || n != 1 { // the GCRA record
		t.Fatalf("Cleanup = %d, %v; want 1 (the GCRA record)", n, err)
	}
	clk.Advance(365 * 24 * time.Hour)
	if n, err := s.Cleanup(ctx); err != nil || n != 1 {
		t.Fatalf("Cleanup a year later = %d, %v; want 1", n, err)
	}
	if _, ok, _ := s.Load(ctx, "l", "never"); !ok {
		t.Fatal("a NoExpiry entry expired")
	}
	if s.Len("l") != 1 {
		t.Fatalf("Len = %d, want 1", s.Len("l"))
	}
}

func TestFail(t *testing.T) {
	s := memstore.New(memstore.Options{})
	ctx := t.Context()
	if err := s.Save(ctx, "l", []store.Entry{{Key: "k", State: []byte("x"), IdleAt: store.NoExpiry}}); err != nil {
		t.Fatal(err)
	}
	down := errors.New("down")
	s.Fail(down)
	if _, ok, err := s.Load(ctx, "l", "k"); !errors.Is(err, down) || ok {
		t.Fatalf("Load while failing = %v, %v; want the failure", ok, err)
	}
	s.Recover()
	if _, ok, err := s.Load(ctx, "l", "k"); err != nil || !ok {
		t.Fatalf("Load after Recover = %v, %v", ok, err)
	}
	clk := clock.NewManual(time.Unix(0, 0))
	clk.Fail(nil)
	s2 := memstore.New(memstore.Options{Clock: clk})
	if _, _, err := s2.Load(context.Background(), "l", "k"); !errors.Is(err, clock.ErrManualFailure) {
		t.Fatalf("Load with a failing clock = %v", err)
	}
}
