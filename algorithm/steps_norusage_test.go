//go:build !unix

package algorithm_test

// benchCPUNanos is not measured on this platform.
func benchCPUNanos() int64 { return 0 }
