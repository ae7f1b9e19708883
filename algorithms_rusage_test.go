//go:build unix

package flux_test

import "syscall"

// algCPUNanos returns the CPU time the process has used (user and system),
// which a machine busy with other work disturbs far less than wall time.
func algCPUNanos() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
