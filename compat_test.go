package flux_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/failure"
	"github.com/fluxlimiter/flux/store/memstore"
)

// The deprecated names keep working as their successors do.
func TestDeprecatedNamesStillWork(t *testing.T) {
	// Limit.Limit is Requests under its former name.
	l, _ := newLimiter(t, flux.Limit{Algorithm: flux.FixedWindow, Limit: 3, Window: time.Second})
	if got := l.Limit(); got.Requests != 3 || got.Limit != 0 {
		t.Fatalf("Limit() = %+v; want Requests 3", got)
	}
	if c := (flux.Limit{Algorithm: flux.FixedWindow, Limit: 3, Window: time.Second}).Capacity(); c != 3 {
		t.Fatalf("capacity %d", c)
	}
	if err := (flux.Limit{Algorithm: flux.FixedWindow, Limit: 3, Requests: 4, Window: time.Second}).Validate(); !errors.Is(err, flux.ErrInvalidLimit) {
		t.Fatalf("conflicting Limit and Requests: %v", err)
	}
	// The field sentinels still match, and so does ErrInvalidLimit.
	err := (flux.Limit{Rate: -1}).Validate()
	if !errors.Is(err, flux.ErrInvalidRate) || !errors.Is(err, flux.ErrInvalidLimit) || errors.Is(err, flux.ErrInvalidBurst) {
		t.Fatalf("bad rate: %v", err)
	}
	if !errors.Is(flux.ErrCostExceedsBurst, flux.ErrCostExceedsCapacity) || !errors.Is(flux.ErrInvalidOption, flux.ErrInvalidArgument) {
		t.Fatal("renamed sentinels differ from their successors")
	}
	if flux.StoreFailOpen != failure.Open || len(flux.Algorithms()) != 6 || flux.DefaultMaxKeyLen != 1024 || flux.DefaultShards() < 1 {
		t.Fatal("deprecated constants changed")
	}
	// Apply is all or nothing; ApplyEach applies the valid updates.
	var be *flux.BatchError
	if err := l.Apply(t.Context(), []flux.Update{{Key: "a", At: t0.UnixNano(), Cost: 1}, {Key: ""}}); !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("Apply: %v", err)
	}
	if d := check(t, l, "a", 0); d.Remaining != 3 {
		t.Fatalf("Apply with an invalid update applied something: %+v", d)
	}
	// CheckBatchEach fails the whole batch on an invalid item.
	errs := make([]error, 2)
	if err := l.CheckBatchEach(t.Context(), []flux.Request{{Key: "a"}, {Key: ""}}, make([]flux.Decision, 2), errs); !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("CheckBatchEach: %v", err)
	}
	n, err := l.CleanupAsync(t.Context(), 0).Wait(t.Context())
	if err != nil || n != 0 {
		t.Fatalf("CleanupAsync: %d, %v", n, err)
	}
	if s := l.StoreStats(); s.Loads != 0 {
		t.Fatalf("StoreStats without a store: %+v", s)
	}
	if len(l.ShardStats()) != len(l.Stats()) {
		t.Fatal("ShardStats and Stats disagree on the shards")
	}
	// WithAtomicStore is WithStore with StoreAtomic.
	st := memstore.New(memstore.Options{})
	a, _ := newLimiter(t, flux.Limit{Rate: 1}, flux.WithAtomicStore(flux.AtomicStoreConfig{Store: st, Limiter: "x"}))
	b, _ := newLimiter(t, flux.Limit{Rate: 1}, flux.WithStore(flux.StoreConfig{Store: st, Limiter: "x", Mode: flux.StoreAtomic}))
	if d := check(t, a, "k", 1); !d.Allowed {
		t.Fatalf("first check: %+v", d)
	}
	if d := check(t, b, "k", 1); d.Allowed {
		t.Fatalf("the store decides for both limiters: the second check of capacity 1 was allowed: %+v", d)
	}
}

// New reports every unusable option at once, not only the last.
func TestOptionErrorsAllReported(t *testing.T) {
	_, err := flux.New(flux.Limit{Rate: 1}, flux.WithShards(0), flux.WithMailbox(0), flux.WithClock(nil),
		flux.WithStore(flux.StoreConfig{Store: memstore.New(memstore.Options{})}))
	if !errors.Is(err, flux.ErrInvalidArgument) {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{"0 shards", "mailbox 0", "nil clock", "limiter's name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	st := memstore.New(memstore.Options{})
	_, err = flux.New(flux.Limit{Rate: 1}, flux.WithStore(flux.StoreConfig{Store: st, Limiter: "a"}), flux.WithStore(flux.StoreConfig{Store: st, Limiter: "a", Mode: flux.StoreAtomic}))
	if err == nil || !strings.Contains(err.Error(), "more than one store") {
		t.Fatalf("two stores: %v", err)
	}
}
