package shard

import "testing"

// The set holds at most its size, keeps at least the half most recently
// remembered, and a key remembered again moves to the newest generation.
func TestRememberedIsBounded(t *testing.T) {
	r := newRemembered(1000)
	for h := range uint64(10_000) {
		r.add(h)
		if h == 600 {
			r.add(7) // remembered again: kept as recent
		}
		if r.len() > 1000 {
			t.Fatalf("after %d keys the set holds %d; want at most 1000", h+1, r.len())
		}
	}
	for h := uint64(9_500); h < 10_000; h++ {
		if !r.has(h) {
			t.Fatalf("key %d, among the 500 most recent, was dropped", h)
		}
	}
	if r.has(100) || r.has(7) {
		t.Fatal("a key remembered 9 000 keys ago is still held")
	}
	// A key remembered again outlives the keys remembered with it.
	r = newRemembered(1000)
	for h := range uint64(1000) {
		r.add(h)
	}
	r.add(3)
	for h := uint64(1000); h < 1500; h++ {
		r.add(h)
	}
	if !r.has(3) || r.has(4) || !r.has(1000) {
		t.Fatalf("after re-adding key 3: has(3)=%v has(4)=%v has(1000)=%v; want true false true", r.has(3), r.has(4), r.has(1000))
	}
}
