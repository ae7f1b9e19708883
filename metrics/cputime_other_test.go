//go:build !linux

package metrics_test

import "time"

func threadCPU() (time.Duration, bool) { return 0, false }
