//go:build !linux

package httplimit_test

import "time"

func threadCPU() (time.Duration, bool) { return 0, false }
