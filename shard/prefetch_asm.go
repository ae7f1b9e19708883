//go:build amd64 || arm64

package shard

// prefetch asks the processor to bring the cache line holding addr into
// its caches without waiting for it: a hint, with no effect on what the
// program computes, and no fault for any address. It takes a uintptr, not
// a pointer, so that it keeps nothing alive.
func prefetch(addr uintptr)

// prefetchSpan is prefetch for every 64-byte line of the n > 0 bytes from
// addr, in one call.
func prefetchSpan(addr, n uintptr)
