package bench

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/fluxlimiter/flux"
)

// MemoryResult is what IdleKeyMemory measured.
type MemoryResult struct {
	Keys        int     // keys held by the limiter
	KeyBytes    float64 // mean key length in bytes
	HeapDelta   uint64  // live heap added by the keys, key bytes included
	BytesPerKey float64 // HeapDelta / Keys - KeyBytes: the limiter's own cost per key
}

func (r MemoryResult) String() string {
	return fmt.Sprintf("%d idle keys: %.1f B/key beyond the key bytes (keys average %.1f B); live heap %.1f MiB in all",
		r.Keys, r.BytesPerKey, r.KeyBytes, float64(r.HeapDelta)/(1<<20))
}

// IdleKeyMemory fills a fresh flux.Limiter with n keys (one check each;
// the background sweep is off, so idle keys stay) and measures the live
// heap they add after a full GC. The keys are cut from one string built
// for the purpose, so their own bytes are exactly the sum of their lengths
// whether the limiter keeps them or copies them; that sum is subtracted.
func IdleKeyMemory(n int) (MemoryResult, error) {
	l, err := flux.New(Limit, flux.WithSweep(-1, 1))
	if err != nil {
		return MemoryResult{}, err
	}
	defer l.Close()

	before := liveHeap()
	keyBytes, err := fill(l, n)
	if err != nil {
		return MemoryResult{}, err
	}
	after := liveHeap()
	if got := l.Len(); got != n {
		return MemoryResult{}, fmt.Errorf("limiter holds %d keys, want %d", got, n)
	}
	delta := after - before
	if after < before {
		delta = 0
	}
	return MemoryResult{
		Keys:        n,
		KeyBytes:    float64(keyBytes) / float64(n),
		HeapDelta:   delta,
		BytesPerKey: float64(delta)/float64(n) - float64(keyBytes)/float64(n),
	}, nil
}

// fill checks n distinct keys once each, all cut from one string, and
// returns the sum of their lengths. Nothing it allocates outlives it except
// what the limiter keeps.
func fill(l *flux.Limiter, n int) (int, error) {
	var sb strings.Builder
	ends := make([]int, n)
	for i := range n {
		sb.WriteString("user:")
		sb.WriteString(strconv.Itoa(i))
		ends[i] = sb.Len()
	}
	all := sb.String()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const batch = 1024
	reqs := make([]flux.Request, 0, batch)
	out := make([]flux.Decision, batch)
	start := 0
	for i, end := range ends {
		reqs = append(reqs, flux.Request{Key: all[start:end], Cost: 1})
		start = end
		if len(reqs) == batch || i == n-1 {
			if err := l.CheckBatch(ctx, reqs, out); err != nil {
				return 0, err
			}
			reqs = reqs[:0]
		}
	}
	return len(all), nil
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
