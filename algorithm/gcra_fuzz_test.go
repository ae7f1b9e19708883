package algorithm

import (
	"encoding/binary"
	"testing"
)

// maxFuzzNow bounds the fuzzed clock (see FuzzGCRAStep).
const maxFuzzNow = 1 << 61

// FuzzGCRAStep drives one key through a sequence of (advance, cost) steps
// and checks the invariants every decision must keep.
func FuzzGCRAStep(f *testing.F) {
	f.Add(10.0, 5.0, []byte{0, 1, 0, 1, 0, 1, 50, 1, 255, 3})
	f.Add(2.0, 0.0, []byte{0, 1, 0, 1})
	f.Add(1e9, 0.0, []byte{0, 1, 1, 1, 0, 1})
	f.Add(1.0/86400, 2.5, []byte{0, 3, 200, 1, 255, 255})
	f.Add(1e6, 999.0, []byte{0, 200, 0, 200, 9, 0})
	f.Fuzz(func(t *testing.T, rate, burst float64, ops []byte) {
		g, err := NewGCRA(rate, burst)
		if err != nil {
			return
		}
		now := int64(1_700_000_000e9)
		tat := g.Fresh(now)
		for len(ops) >= 2 {
			adv, c := ops[0], ops[1]
			ops = ops[2:]
			n, unit := int64(adv), g.Interval()/16+1
			if len(ops) >= 4 && adv == 255 {
				n, unit = int64(binary.BigEndian.Uint32(ops)), g.Interval()/1024+1
				ops = ops[4:]
			}
			if n > 0 && unit > (maxFuzzNow-now)/n {
				// Clocks up to 2^61 ns (the year 2043) keep every TAT below
				// 2^63 (T+τ ≤ 2^62). Beyond, the TAT saturates and the exact
				// RetryAfter and ResetAfter checks below cannot hold;
				// TestGCRASaturatedSpans covers that range.
				return
			}
			now += n * unit
			cost := int64(c) % (g.Capacity() + 1)
			next, d, changed := g.Step(tat, now, cost)
			if d.Limit != int(g.Capacity()) || d.Remaining < 0 || d.Remaining > d.Limit || d.ResetAfter < 0 {
				t.Fatalf("bad decision %+v (capacity %d)", d, g.Capacity())
			}
			if !d.Allowed || cost == 0 {
				if changed || next != tat {
					t.Fatalf("denial or peek changed the state: %d → %d (%+v)", tat, next, d)
				}
			}
			if d.Allowed && d.RetryAfter != 0 {
				t.Fatalf("allowed with RetryAfter %v", d.RetryAfter)
			}
			if !d.Allowed {
				if d.RetryAfter <= 0 {
					t.Fatalf("denied with RetryAfter %v", d.RetryAfter)
				}
				want := max(cost, 1)
				if _, again, _ := g.Step(tat, now+int64(d.RetryAfter), want); !again.Allowed {
					t.Fatalf("waiting RetryAfter %v did not admit: %+v", d.RetryAfter, again)
				}
				if _, early, _ := g.Step(tat, now+int64(d.RetryAfter)-1, want); early.Allowed {
					t.Fatalf("admitted 1ns before RetryAfter %v", d.RetryAfter)
				}
			}
			if cost > 0 && d.Allowed && g.IdleAt(next) != now+int64(d.ResetAfter) {
				t.Fatalf("ResetAfter %v disagrees with IdleAt %d (now %d)", d.ResetAfter, g.IdleAt(next), now)
			}
			tat = next
		}
	})
}
