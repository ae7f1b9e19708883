//go:build unix

package load

import (
	"syscall"
	"time"
)

// preciseSleep sleeps for about d with the kernel's high-resolution timer
// (see ticker): nanosleep oversleeps by tens of microseconds.
func preciseSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(d.Nanoseconds())
	for {
		err := syscall.Nanosleep(&ts, &ts) // ts is left holding the rest if interrupted
		if err != syscall.EINTR {
			return
		}
	}
}
