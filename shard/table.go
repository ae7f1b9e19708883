package shard

import (
	"hash/maphash"
	"iter"
	"math/bits"
	"unsafe"
)

// table is the shard's key → state map. It is a Swiss table (groups of
// eight slots, each with a one-byte control word, matched eight at a time)
// whose states are stored inline beside their keys, so that a check finds
// its key with one hash and one probe and updates the state in place,
// without the pointer per key that map[string]*S needs (8 bytes and a
// cache miss per key) or the second probe a map[string]S assignment costs.
//
// The slots are divided into subtables of at most maxTableSlots under an
// extendible-hashing directory indexed by the hash's top bits, as Go's own
// maps are: a subtable that fills up doubles or splits in two, so one
// insert never rehashes more than maxTableSlots keys, whatever the size of
// the table. Deletion leaves a tombstone only where a probe may have passed
// the slot; tombstones are dropped when their subtable is rebuilt.
// Subtables that deletions leave less than an eighth full are rebuilt
// smaller by compact, which the shard calls after its sweeps, so memory
// taken by a surge of keys comes back once they are gone (a Go map never
// shrinks).
//
// Pointers returned by get and by the iterators stay valid until the next
// insert. A table is not safe for concurrent use: its shard's goroutine
// owns it.
type table[S any] struct {
	seed   maphash.Seed
	dir    []*subtable[S] // 1<<depth entries
	depth  uint8          // global depth
	used   int
	sparse []*subtable[S] // subtables deletions left mostly empty (compact)
}

const (
	groupSlots    = 8
	maxTableSlots = 1024

	ctrlEmpty   = 0x80 // 1000_0000
	ctrlDeleted = 0xFE // 1111_1110; a full slot is 0xxx_xxxx: the hash's low 7 bits

	bitsetLSB = 0x0101010101010101
	bitsetMSB = 0x8080808080808080
)

type slot[S any] struct {
	key string
	val S
}

// ctrlGroup holds the control bytes of a group's slots, slot i in byte i.
type ctrlGroup uint64

// matchH2 returns a set (one high bit per byte) of the slots whose control
// byte may equal h2. False positives are possible (the caller compares
// keys); false negatives are not.
func (c ctrlGroup) matchH2(h2 uint64) uint64 {
	v := uint64(c) ^ (bitsetLSB * h2)
	return ((v - bitsetLSB) &^ v) & bitsetMSB
}

// matchEmpty returns the set of empty slots.
func (c ctrlGroup) matchEmpty() uint64 {
	v := uint64(c)
	return (v &^ (v << 6)) & bitsetMSB
}

// matchEmptyOrDeleted returns the set of slots that are not full.
func (c ctrlGroup) matchEmptyOrDeleted() uint64 { return uint64(c) & bitsetMSB }

func (c *ctrlGroup) set(i int, b uint8) {
	sh := uint(i) * 8
	*c = ctrlGroup(uint64(*c)&^(0xff<<sh) | uint64(b)<<sh)
}

func (c ctrlGroup) get(i int) uint8 { return uint8(c >> (uint(i) * 8)) }

type group[S any] struct {
	ctrl  ctrlGroup
	slots [groupSlots]slot[S]
}

type subtable[S any] struct {
	groups     []group[S] // a power of two of them
	mask       uint64     // len(groups) - 1
	used       int        // full slots
	growthLeft int        // empty slots that may still be filled before a rebuild
	depth      uint8      // local depth: the directory bits this subtable owns
	index      int        // first directory entry pointing to it
	sparse     bool       // queued in table.sparse
}

func newSubtable[S any](slots int, depth uint8, index int) *subtable[S] {
	n := slots / groupSlots
	st := &subtable[S]{groups: make([]group[S], n), mask: uint64(n - 1), depth: depth, index: index}
	for i := range st.groups {
		st.groups[i].ctrl = bitsetMSB // all empty
	}
	st.growthLeft = slots * 7 / 8
	return st
}

func (st *subtable[S]) slots() int { return len(st.groups) * groupSlots }

// probe walks a subtable's groups: quadratic (triangular) steps, which
// visit every group of a power-of-two count.
type probe struct{ mask, offset, index uint64 }

func makeProbe(h1, mask uint64) probe { return probe{mask: mask, offset: h1 & mask} }

func (p probe) next() probe {
	p.index++
	p.offset = (p.offset + p.index) & p.mask
	return p
}

func newTable[S any](seed maphash.Seed) *table[S] {
	return &table[S]{seed: seed, dir: []*subtable[S]{newSubtable[S](groupSlots, 0, 0)}}
}

// hash returns key's hash under the table's seed.
func (t *table[S]) hash(key string) uint64 { return maphash.String(t.seed, key) }

func (t *table[S]) len() int { return t.used }

func (t *table[S]) sub(h uint64) *subtable[S] {
	return t.dir[h>>(64-uint(t.depth))&(uint64(len(t.dir))-1)]
}

// prefetchGroup starts loading the first group a lookup of hash h reads
// (its control word and slots span a few cache lines) without waiting.
func (t *table[S]) prefetchGroup(h uint64) {
	st := t.sub(h)
	g := &st.groups[(h>>7)&st.mask]
	prefetchSpan(uintptr(unsafe.Pointer(g)), unsafe.Sizeof(*g))
}

// prefetchKey starts loading the bytes of the key held in the first slot
// of h's first group whose control byte matches, the bytes a lookup will
// compare. Call it once the group is in cache (after prefetchGroup).
func (t *table[S]) prefetchKey(h uint64) {
	st := t.sub(h)
	g := &st.groups[(h>>7)&st.mask]
	if m := g.ctrl.matchH2(h & 0x7f); m != 0 {
		prefetch(uintptr(unsafe.Pointer(unsafe.StringData(g.slots[bits.TrailingZeros64(m)>>3].key))))
	}
}

// get returns a pointer to key's state, or nil if key is not held.
func (t *table[S]) get(key string) *S { return t.getHash(t.hash(key), key) }

// getHash is get with key's hash already computed.
func (t *table[S]) getHash(h uint64, key string) *S {
	st := t.sub(h)
	h2 := h & 0x7f
	for p := makeProbe(h>>7, st.mask); ; p = p.next() {
		g := &st.groups[p.offset]
		for m := g.ctrl.matchH2(h2); m != 0; m &= m - 1 {
			s := &g.slots[bits.TrailingZeros64(m)>>3]
			if s.key == key {
				return &s.val
			}
		}
		if g.ctrl.matchEmpty() != 0 {
			return nil
		}
	}
}

// insert adds key, which must not be held, with state v and returns a
// pointer to the stored state. The table keeps key as given: callers clone
// keys that alias reusable buffers.
func (t *table[S]) insert(key string, v S) *S { return t.insertHash(t.hash(key), key, v) }

// insertHash is insert with key's hash already computed.
func (t *table[S]) insertHash(h uint64, key string, v S) *S {
	for {
		st := t.sub(h)
		for p := makeProbe(h>>7, st.mask); ; p = p.next() {
			g := &st.groups[p.offset]
			m := g.ctrl.matchEmptyOrDeleted()
			if m == 0 {
				continue
			}
			i := bits.TrailingZeros64(m) >> 3
			if g.ctrl.get(i) == ctrlEmpty {
				if st.growthLeft == 0 {
					break // rebuild, then look again
				}
				st.growthLeft--
			}
			g.ctrl.set(i, uint8(h&0x7f))
			g.slots[i] = slot[S]{key: key, val: v}
			st.used++
			t.used++
			return &g.slots[i].val
		}
		t.rebuild(st)
	}
}

// delete removes key and reports whether it was held.
func (t *table[S]) delete(key string) bool {
	h := t.hash(key)
	st := t.sub(h)
	h2 := h & 0x7f
	for p := makeProbe(h>>7, st.mask); ; p = p.next() {
		g := &st.groups[p.offset]
		for m := g.ctrl.matchH2(h2); m != 0; m &= m - 1 {
			i := bits.TrailingZeros64(m) >> 3
			if g.slots[i].key != key {
				continue
			}
			g.slots[i] = slot[S]{} // drop the key for the collector
			st.used--
			t.used--
			// A group with an empty slot ends every probe that reaches it,
			// so no probe can have passed this slot: it may become empty.
			if g.ctrl.matchEmpty() != 0 {
				g.ctrl.set(i, ctrlEmpty)
				st.growthLeft++
			} else {
				g.ctrl.set(i, ctrlDeleted)
			}
			if !st.sparse && shrinkable(st) {
				st.sparse = true
				t.sparse = append(t.sparse, st)
			}
			return true
		}
		if g.ctrl.matchEmpty() != 0 {
			return false
		}
	}
}

// shrinkable reports whether st is less than an eighth full and a smaller
// subtable would hold its entries.
func shrinkable[S any](st *subtable[S]) bool {
	return st.used*8 < st.slots() && shrinkSize(st.used) < st.slots()
}

// shrinkSize is the smallest subtable size that holds used entries at
// most 7/16 full, so that it has room to grow again before its next
// rebuild.
func shrinkSize(used int) int {
	n := groupSlots
	for n*7/16 < used {
		n *= 2
	}
	return n
}

// compact rebuilds at a smaller size up to budget of the subtables that
// deletions left less than an eighth full, so that the memory a surge of
// keys took comes back once they are swept. Each rebuild moves at most
// maxTableSlots entries. Like insert, it moves entries: it must not run
// while an all loop is active or a pointer from get is still used; paused
// cursors cope (they walk a rebuilt subtable again). It reports whether
// subtables are still waiting.
func (t *table[S]) compact(budget int) bool {
	n := 0
	for _, st := range t.sparse {
		if n == budget {
			break
		}
		n++
		st.sparse = false
		if t.dir[st.index] != st || !shrinkable(st) {
			continue // rebuilt or split since, or filled up again
		}
		t.replace(st, t.rehash(st, shrinkSize(st.used), st.depth, st.index, 0, 0))
	}
	rest := copy(t.sparse, t.sparse[n:])
	clear(t.sparse[rest:])
	t.sparse = t.sparse[:rest]
	return rest > 0
}

// rebuild makes room in st, which has no growth left: the same size again
// if tombstones hold much of it, else twice the size, else (at the size
// cap) split in two.
func (t *table[S]) rebuild(st *subtable[S]) {
	n := st.slots()
	switch {
	case st.used < n*7/16:
		t.replace(st, t.rehash(st, n, st.depth, st.index, 0, 0))
	case n < maxTableSlots:
		t.replace(st, t.rehash(st, 2*n, st.depth, st.index, 0, 0))
	default:
		t.split(st)
	}
}

// rehash copies the entries of st whose hash has bit&h == want into a new
// subtable of the given size.
func (t *table[S]) rehash(st *subtable[S], slots int, depth uint8, index int, bit, want uint64) *subtable[S] {
	nt := newSubtable[S](slots, depth, index)
	for gi := range st.groups {
		g := &st.groups[gi]
		for i := range groupSlots {
			if g.ctrl.get(i)&ctrlEmpty != 0 {
				continue
			}
			s := &g.slots[i]
			h := t.hash(s.key)
			if h&bit != want {
				continue
			}
			nt.place(h, s.key, s.val)
		}
	}
	return nt
}

// place stores an entry in a subtable being built: no tombstones, room
// guaranteed.
func (st *subtable[S]) place(h uint64, key string, v S) {
	for p := makeProbe(h>>7, st.mask); ; p = p.next() {
		g := &st.groups[p.offset]
		if m := g.ctrl.matchEmpty(); m != 0 {
			i := bits.TrailingZeros64(m) >> 3
			g.ctrl.set(i, uint8(h&0x7f))
			g.slots[i] = slot[S]{key: key, val: v}
			st.used++
			st.growthLeft--
			return
		}
	}
}

// replace points old's directory entries at nt.
func (t *table[S]) replace(old, nt *subtable[S]) {
	span := 1 << (t.depth - old.depth)
	for i := old.index; i < old.index+span; i++ {
		t.dir[i] = nt
	}
}

// split divides a full-size subtable in two by the next hash bit,
// doubling the directory first if the subtable owns only one entry.
func (t *table[S]) split(st *subtable[S]) {
	if st.depth == t.depth {
		nd := make([]*subtable[S], 2*len(t.dir))
		for i := range nd {
			nd[i] = t.dir[i/2]
		}
		for i := len(nd) - 1; i >= 0; i-- {
			nd[i].index = i // ends at each subtable's first entry
		}
		t.dir, t.depth = nd, t.depth+1
	}
	bit := uint64(1) << (63 - uint(st.depth))
	half := 1 << (t.depth - st.depth - 1)
	left := t.rehash(st, st.slots(), st.depth+1, st.index, bit, 0)
	right := t.rehash(st, st.slots(), st.depth+1, st.index+half, bit, bit)
	for i := range half {
		t.dir[st.index+i] = left
		t.dir[st.index+half+i] = right
	}
}

// all yields every entry. The loop body may delete the entry it was given
// (or any other) but must not insert.
func (t *table[S]) all() iter.Seq2[string, *S] {
	return func(yield func(string, *S) bool) {
		for i, st := range t.dir {
			if st.index != i {
				continue // seen at its first entry
			}
			for gi := range st.groups {
				g := &st.groups[gi]
				for j := range groupSlots {
					if g.ctrl.get(j)&ctrlEmpty != 0 {
						continue
					}
					if !yield(g.slots[j].key, &g.slots[j].val) {
						return
					}
				}
			}
		}
	}
}

// cursor is a pass over a table paused between messages. Inserts between
// steps may rebuild subtables; the pass then walks a rebuilt subtable again
// from its start, so every key held for the whole pass is visited at least
// once and some may be visited twice.
type cursor[S any] struct {
	active bool
	st     *subtable[S] // subtable being walked, nil between subtables
	dirIdx int          // its first directory entry, at global depth depth
	depth  uint8
	pos    int // next slot of st
}

func (c *cursor[S]) reset() { *c = cursor[S]{} }

// next returns the pass's next entry, starting a pass if none is running;
// ok is false when the pass ends (the next call starts another).
func (c *cursor[S]) next(t *table[S]) (key string, v *S, ok bool) {
	if !c.active {
		*c = cursor[S]{active: true, depth: t.depth}
	}
	if c.depth != t.depth { // the directory doubled: rescale the position
		c.dirIdx <<= t.depth - c.depth
		c.depth = t.depth
	}
	for c.dirIdx < len(t.dir) {
		st := t.dir[c.dirIdx]
		if st != c.st {
			// A new subtable, or the one being walked was rebuilt: walk it
			// from its start. c.dirIdx is its first entry, since rebuilds
			// and splits keep their first entry where it was.
			c.st, c.pos, c.dirIdx = st, 0, st.index
		}
		for c.pos < st.slots() {
			g := &st.groups[c.pos/groupSlots]
			j := c.pos % groupSlots
			c.pos++
			if g.ctrl.get(j)&ctrlEmpty == 0 {
				return g.slots[j].key, &g.slots[j].val, true
			}
		}
		c.dirIdx += 1 << (t.depth - st.depth)
		c.st = nil
	}
	c.reset()
	return "", nil, false
}
