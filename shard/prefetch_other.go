//go:build !amd64 && !arm64

package shard

// prefetch is a no-op where Flux has no assembly for the hint.
func prefetch(addr uintptr) {}

// prefetchSpan is a no-op where Flux has no assembly for the hint.
func prefetchSpan(addr, n uintptr) {}
