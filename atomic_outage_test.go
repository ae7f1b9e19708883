package flux_test

import (
	"errors"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/store/memstore"
)

// Atomic mode, local policy: a key checked since start and then forgotten
// at full allowance (here by Cleanup; the sweep does the same) is decided
// from memory as a fresh key while the store is down, up to its capacity;
// a throttled key stays throttled and a key never checked is denied.
func TestAtomicStoreLocalDecidesForgottenKeys(t *testing.T) {
	clk := clock.NewManual(t0)
	st := memstore.New(memstore.Options{Clock: clk})
	l := atomicLimiter(t, clk, st, flux.Limit{Rate: 1, Burst: 4}, flux.AtomicStoreConfig{
		OnFailure: flux.StoreFailLocal, Timeout: 20 * time.Millisecond, Backoff: time.Hour, RetryAfter: 3 * time.Second,
	})
	check(t, l, "honest", 1)
	for deadline := time.Now().Add(5 * time.Second); l.Len() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the store's answer never reached the local mirror")
		}
	}
	clk.Advance(2 * time.Second) // honest is back at full allowance
	if n, err := l.Cleanup(t.Context(), 0); err != nil || n != 1 {
		t.Fatalf("Cleanup = %d, %v; want honest forgotten", n, err)
	}
	for range 5 {
		check(t, l, "spent", 1)
	}
	st.Fail(errors.New("store down"))
	n := 0
	for {
		d := check(t, l, "honest", 1)
		if !d.Allowed {
			if d.RetryAfter == 3*time.Second {
				t.Fatalf("forgotten key denied by the policy after %d admissions: %+v", n, d)
			}
			break
		}
		n++
	}
	if n != 5 {
		t.Fatalf("forgotten key: %d admitted from memory; want its capacity, 5", n)
	}
	if d := check(t, l, "spent", 1); d.Allowed {
		t.Fatalf("a throttled key was admitted: %+v", d)
	}
	if d := check(t, l, "never", 1); d.Allowed || d.RetryAfter != 3*time.Second {
		t.Fatalf("a key never checked: %+v; want denied by the policy", d)
	}
}
