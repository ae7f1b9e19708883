package flux_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
)

// CheckEach reports every item that cannot be decided in its own entry
// and decides the others, in order, as one batch would.
func TestCheckEach(t *testing.T) {
	var after, onErr atomic.Int64
	hooks := flux.WithHooks(flux.Hooks{
		AfterCheck: func(_ context.Context, _ string, _ int, _ flux.Decision, _ time.Duration) { after.Add(1) },
		OnError:    func(_ context.Context, _ string, _ int, _ error, _ time.Duration) { onErr.Add(1) },
	})
	for _, tc := range []struct {
		name string
		opts []flux.Option
	}{{"1 shard", []flux.Option{flux.WithShards(1)}}, {"4 shards", []flux.Option{flux.WithShards(4)}}, {"hooks", []flux.Option{flux.WithShards(4), hooks}}} {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 2}, tc.opts...) // capacity 3
			reqs := []flux.Request{
				{Key: "a", Cost: 2},
				{Key: ""},
				{Key: "b"},
				{Key: "a", Cost: 4},
				{Key: "a", Cost: 1, Peek: true},
				{Key: strings.Repeat("k", 2000)},
				{Key: "a", Cost: -1},
				{Key: "a"},
				{Key: "a"},
				{Key: "b", Peek: true},
			}
			out := make([]flux.Decision, len(reqs))
			for i := range out {
				out[i] = flux.Decision{Remaining: 99} // must be overwritten
			}
			errs := make([]error, len(reqs)+2)
			for i := range errs {
				errs[i] = errors.New("stale") // CheckEach sets every entry
			}
			if err := l.CheckEach(t.Context(), reqs, out, errs); err != nil {
				t.Fatal(err)
			}
			wantErr := map[int]error{1: flux.ErrEmptyKey, 3: flux.ErrCostExceedsCapacity, 4: flux.ErrInvalidCost, 5: flux.ErrKeyTooLong, 6: flux.ErrInvalidCost}
			for i := range reqs {
				if w := wantErr[i]; w != nil {
					if !errors.Is(errs[i], w) || out[i] != (flux.Decision{}) {
						t.Errorf("item %d: %v, %+v; want %v and a zero decision", i, errs[i], out[i], w)
					}
				} else if errs[i] != nil {
					t.Errorf("item %d: %v", i, errs[i])
				}
			}
			if errs[len(reqs)] == nil {
				t.Error("CheckEach touched errs beyond len(reqs)")
			}
			// a: 2 then 1 (allowed, 0 left) then denied; b: 1 then a peek.
			if !out[0].Allowed || out[0].Remaining != 1 || !out[7].Allowed || out[7].Remaining != 0 || out[8].Allowed {
				t.Errorf("key a: %+v %+v %+v", out[0], out[7], out[8])
			}
			if !out[2].Allowed || out[2].Remaining != 2 || !out[9].Allowed || out[9].Remaining != 2 {
				t.Errorf("key b: %+v, peek %+v", out[2], out[9])
			}
			if err := l.CheckEach(t.Context(), reqs, out, errs[:2]); !errors.Is(err, flux.ErrInvalidArgument) {
				t.Errorf("short errs: %v; want ErrInvalidArgument", err)
			}
		})
	}
	if after.Load() != 5 || onErr.Load() != 5 {
		t.Errorf("hooks: %d AfterCheck, %d OnError; want 5 and 5 (one per item)", after.Load(), onErr.Load())
	}
}

// ApplyEach applies the valid updates and reports the others per item.
func TestApplyEach(t *testing.T) {
	l, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 2})
	ups := []flux.Update{{Key: "a", At: t0.UnixNano(), Cost: 2}, {Key: "", Cost: 1}, {Key: "b", At: t0.UnixNano(), Cost: -1}, {Key: "b", At: t0.UnixNano(), Cost: 5}}
	errs := make([]error, len(ups))
	if err := l.ApplyEach(t.Context(), ups, errs); err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || !errors.Is(errs[1], flux.ErrEmptyKey) || !errors.Is(errs[2], flux.ErrInvalidCost) || errs[3] != nil {
		t.Fatalf("errs %v", errs)
	}
	if d := check(t, l, "a", 0); d.Remaining != 1 {
		t.Errorf("a after an update of 2: %+v; want 1 remaining", d)
	}
	// An update may exceed the capacity: it sums a peer's admissions.
	if d := check(t, l, "b", 0); d.Allowed || d.Remaining != 0 {
		t.Errorf("b after an update of 5: %+v; want throttled", d)
	}
	var be *flux.BatchError
	if err := l.Apply(t.Context(), ups); !errors.As(err, &be) || be.Index != 1 {
		t.Errorf("Apply with an invalid update: %v; want a *BatchError at 1", err)
	}
}

// Validate refuses what a batch would refuse, and decides nothing.
func TestValidateRequest(t *testing.T) {
	l, _ := newLimiter(t, flux.Limit{Rate: 1, Burst: 2}, flux.WithMaxKeyLen(8))
	for _, tc := range []struct {
		r    flux.Request
		want error
	}{
		{flux.Request{Key: "k"}, nil},
		{flux.Request{Key: "k", Peek: true}, nil},
		{flux.Request{Key: "k", Cost: 3}, nil},
		{flux.Request{}, flux.ErrEmptyKey},
		{flux.Request{Key: "123456789"}, flux.ErrKeyTooLong},
		{flux.Request{Key: "k", Cost: -1}, flux.ErrInvalidCost},
		{flux.Request{Key: "k", Cost: 2, Peek: true}, flux.ErrInvalidCost},
		{flux.Request{Key: "k", Cost: 4}, flux.ErrCostExceedsCapacity},
	} {
		if err := l.Validate(tc.r); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("Validate(%+v) = %v; want %v", tc.r, err, tc.want)
		}
	}
	if l.Len() != 0 {
		t.Fatalf("Validate stored %d keys", l.Len())
	}
}
