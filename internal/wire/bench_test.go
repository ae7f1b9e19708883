package wire

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
)

func batchBody(n int) []byte {
	b := []byte(`{"requests":[`)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"limiter":"api","key":"user-%d","cost":1}`, i)
	}
	return append(b, "]}"...)
}

func BenchmarkDecodeCheck(b *testing.B) {
	data := []byte(`{"limiter":"api","key":"user-12345","cost":1}`)
	var it Item
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeCheck(data, &it); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeCheckStdlib(b *testing.B) {
	data := []byte(`{"limiter":"api","key":"user-12345","cost":1}`)
	var v struct {
		Limiter string `json:"limiter"`
		Key     string `json:"key"`
		Cost    *int   `json:"cost"`
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := json.Unmarshal(data, &v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBatch100(b *testing.B) {
	data := batchBody(100)
	items := make([]Item, 0, 100)
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		var err error
		if items, err = DecodeBatch(data, items[:0], 1000); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/key")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*100), "cpu-ns/key")
}

func BenchmarkAppendDecision(b *testing.B) {
	d := flux.Decision{Allowed: true, Limit: 21, Remaining: 20, ResetAfter: 10_000_000}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendDecision(buf[:0], d)
	}
}

func BenchmarkAppendDecisionStdlib(b *testing.B) {
	type rep struct {
		Allowed      bool  `json:"allowed"`
		Limit        int   `json:"limit"`
		Remaining    int   `json:"remaining"`
		RetryAfterNS int64 `json:"retry_after_ns"`
		ResetAfterNS int64 `json:"reset_after_ns"`
		DelayNS      int64 `json:"delay_ns"`
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(rep{true, 21, 20, 0, 10_000_000, 0}); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuTime is the process's user and system CPU time so far: on a shared
// machine CPU time per operation varies much less than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
