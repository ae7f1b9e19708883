package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/store"
)

// KeyNames returns n distinct keys, "user-000000" on, for the backends'
// benchmarks.
func KeyNames(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("user-%06d", i)
	}
	return ks
}

// Entries returns an 8-byte state for each key, idle an hour from now.
func Entries(keys []string) []store.Entry {
	idle := time.Now().Add(time.Hour).UnixNano()
	es := make([]store.Entry, len(keys))
	for i, k := range keys {
		es[i] = store.Entry{Key: k, State: make([]byte, 8), IdleAt: idle}
	}
	return es
}

// PerSecond reports n things done over the benchmark's elapsed time, as
// unit (such as "entries/s").
func PerSecond(b *testing.B, n int, unit string) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), unit)
}
