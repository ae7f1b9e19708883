//go:build !linux

package flux_test

import "time"

func threadCPU() (time.Duration, bool) { return 0, false }
