// Package keyseq names benchmark keys and draws them pseudo-randomly, the
// same way for every system under test.
package keyseq

import (
	"strconv"
	"sync/atomic"
)

// Names returns n distinct keys: prefix followed by 0 to n-1.
func Names(prefix string, n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = prefix + strconv.Itoa(i)
	}
	return ks
}

// Seq is a cheap pseudo-random walk over key indexes (xorshift64*), one
// per goroutine, so no generator is shared. It draws indexes uniformly.
type Seq struct{ x uint64 }

var seeds atomic.Uint64

// NewSeq returns a Seq with a seed no other Seq in the process has.
func NewSeq() Seq { return Seq{x: 0x9E3779B97F4A7C15 * (seeds.Add(1)<<1 | 1)} }

// Next returns an index in [0, n).
func (s *Seq) Next(n int) int {
	s.x ^= s.x >> 12
	s.x ^= s.x << 25
	s.x ^= s.x >> 27
	return int(((s.x * 2685821657736338717) >> 33) % uint64(n))
}
