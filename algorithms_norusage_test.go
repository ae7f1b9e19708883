//go:build !unix

package flux_test

// algCPUNanos is not measured on this platform.
func algCPUNanos() int64 { return 0 }
