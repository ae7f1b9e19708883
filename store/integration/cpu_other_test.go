//go:build !unix

package integration

// cpuNanos is not measured here: cpu-ns/check reads 0.
func cpuNanos() int64 { return 0 }
