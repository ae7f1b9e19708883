package shard

// remembered is the set of keys a shard with a store has dropped from its
// table while their state equalled a fresh key's (swept, evicted, cleaned
// up, or loaded from the store as fresh or absent), so that while the
// store is down such a key is decided from memory, as a fresh key, instead
// of being taken for a key never seen. A state equal to a fresh key stays
// equal to one as time passes, so no time needs remembering with it:
// whenever this shard decides the key again, it was fresh here.
//
// Keys are kept as their 64-bit hashes under the table's random seed,
// about 9 to 18 bytes a key instead of the key and its state. Two keys of
// the same hash are one: among n remembered keys a key never seen here
// passes for a remembered one with probability n/2^64, which an attacker
// cannot raise without knowing the seed.
//
// The set is bounded: it fills a generation of up to half its size, then
// starts a new one and keeps the last, so it holds the half to whole of its
// size most recently remembered (a key forgotten again moves to the current
// generation). A key that fell out is again denied while the store is down,
// as before this set existed; it is never admitted by mistake.
//
// A remembered set is owned by its shard's goroutine.
type remembered struct {
	cur, prev map[uint64]struct{}
	half      int
}

func newRemembered(size int) *remembered {
	return &remembered{cur: make(map[uint64]struct{}), half: max(1, size/2)}
}

// add remembers the key of hash h as fresh.
func (r *remembered) add(h uint64) {
	if _, ok := r.cur[h]; ok {
		return
	}
	if len(r.cur) >= r.half {
		r.prev, r.cur = r.cur, make(map[uint64]struct{}, r.half/4)
	}
	r.cur[h] = struct{}{}
}

// has reports whether the key of hash h is remembered as fresh.
func (r *remembered) has(h uint64) bool {
	if _, ok := r.cur[h]; ok {
		return true
	}
	_, ok := r.prev[h]
	return ok
}

// len returns the number of keys remembered.
func (r *remembered) len() int { return len(r.cur) + len(r.prev) }
