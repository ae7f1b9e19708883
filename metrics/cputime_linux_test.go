package metrics_test

import (
	"syscall"
	"time"
)

// threadCPU returns the CPU time the calling OS thread has used, so a
// serial benchmark locked to its thread can report its cost without the
// time it spent descheduled on a busy machine.
func threadCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
