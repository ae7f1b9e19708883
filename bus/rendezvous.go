package bus

import (
	"slices"
)

// View is an immutable set of nodes with rendezvous (highest random
// weight) hashing over them: each key is owned by the node that scores
// highest for it. When a node leaves, only its keys move (each to the node
// that ranked second for it); when a node joins, it takes about 1/n of the
// keys, from every other node alike.
//
// Scores are computed with 64-bit FNV-1a and a fixed mixing function, never
// with a per-process seed, so every node (and every version of Flux that
// speaks protocol version 1) picks the same owner for the same key and
// members. A View is safe for simultaneous use.
type View struct {
	nodes []string // sorted
	seeds []uint64 // mix(fnv(node)), aligned with nodes
}

// NewView returns the view of nodes (duplicates are ignored).
func NewView(nodes ...string) *View {
	ns := slices.Clone(nodes)
	slices.Sort(ns)
	ns = slices.Compact(ns)
	v := &View{nodes: ns, seeds: make([]uint64, len(ns))}
	for i, n := range ns {
		v.seeds[i] = mix64(fnv64a(n))
	}
	return v
}

// Nodes returns the members, sorted. The caller must not modify the slice.
func (v *View) Nodes() []string { return v.nodes }

// Len returns the number of members.
func (v *View) Len() int { return len(v.nodes) }

// Contains reports whether node is a member.
func (v *View) Contains(node string) bool {
	_, ok := slices.BinarySearch(v.nodes, node)
	return ok
}

// Owner returns the member that owns key, or "" if the view is empty.
func (v *View) Owner(key string) string {
	i := v.owner(fnv64a(key))
	if i < 0 {
		return ""
	}
	return v.nodes[i]
}

func (v *View) owner(kh uint64) int {
	best, bi := uint64(0), -1
	for i, s := range v.seeds {
		// Ties are broken by the sorted order, identically everywhere.
		if sc := mix64(kh ^ s); bi < 0 || sc > best {
			best, bi = sc, i
		}
	}
	return bi
}

// Without returns the view minus node (v itself if node is not a member).
func (v *View) Without(node string) *View {
	i, ok := slices.BinarySearch(v.nodes, node)
	if !ok {
		return v
	}
	return &View{
		nodes: slices.Delete(slices.Clone(v.nodes), i, i+1),
		seeds: slices.Delete(slices.Clone(v.seeds), i, i+1),
	}
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv64a(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix64 is the finaliser of MurmurHash3 (fmix64): a bijection in which
// every input bit affects every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
