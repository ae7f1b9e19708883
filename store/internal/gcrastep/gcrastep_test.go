package gcrastep

import (
	"errors"
	"testing"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/internal/errs"
)

func TestArgs(t *testing.T) {
	g, _ := algorithm.NewGCRA(10, 4) // T = 100 ms, τ = 400 ms, capacity 5
	if nT, bound, err := Args(g, 3); err != nil || nT != 3e8 || bound != 5e8 {
		t.Fatalf("Args(3) = %d, %d, %v", nT, bound, err)
	}
	for cost, want := range map[int64]error{-1: errs.InvalidCost, 6: errs.CostExceedsBurst} {
		if _, _, err := Args(g, cost); !errors.Is(err, want) {
			t.Errorf("Args(%d) = %v, want %v", cost, err, want)
		}
	}
	if _, _, err := Args(algorithm.GCRA{}, 1); !errors.Is(err, errs.InvalidRate) {
		t.Errorf("Args(zero GCRA) = %v", err)
	}
}

func TestDecide(t *testing.T) {
	g, _ := algorithm.NewGCRA(10, 4)
	const now = int64(1e18)
	// Admitted from a fresh key: TAT now + 2T.
	_, want, _ := g.Step(Fresh, now, 2)
	if d, err := Decide(g, now, 2, true, now+2e8); err != nil || d != want {
		t.Fatalf("Decide(admitted) = %+v, %v; want %+v", d, err, want)
	}
	// Denied at a full key.
	full := now + 5e8
	_, want, _ = g.Step(full, now, 1)
	if d, err := Decide(g, now, 1, false, full); err != nil || d != want {
		t.Fatalf("Decide(denied) = %+v, %v; want %+v", d, err, want)
	}
	// A verdict that contradicts the rule is an error, not a Decision.
	if _, err := Decide(g, now, 1, false, Fresh); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Decide(denied fresh key) = %v, want ErrMismatch", err)
	}
	if _, err := Decide(g, now, 1, true, full+1e8); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Decide(admitted beyond the tolerance) = %v, want ErrMismatch", err)
	}
	// A peek reports what a cost-1 request would get.
	_, want, _ = g.Step(full, now, 0)
	if d, err := Decide(g, now, 0, false, full); err != nil || d != want {
		t.Fatalf("Decide(peek) = %+v, %v", d, err)
	}
}
