package store_test

import (
	"math"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/store"
)

func TestTTL(t *testing.T) {
	const now = int64(1_700_000_000_000_000_000)
	m := time.Minute
	for _, c := range []struct {
		name       string
		idleAt     int64
		now        int64
		margin     time.Duration
		want       time.Duration
		wantExpire bool
	}{
		{"future", now + int64(time.Hour), now, m, time.Hour + m, true},
		{"now", now, now, m, m, true},
		{"past: the margin from the write", now - int64(time.Hour), now, m, m, true},
		{"negative margin counts as zero", now + 5, now, -m, 5, true},
		{"never", store.NoExpiry, now, m, 0, false},
		{"fresh GCRA state", math.MinInt64, now, m, m, true},
		{"idleAt far past, now negative", math.MinInt64, -1, 0, 0, true},
		{"overflowing difference: no expiry", math.MaxInt64 - 1, -now, m, 0, false},
		{"overflowing margin: no expiry", now + int64(time.Hour), now, math.MaxInt64, 0, false},
		{"up to MaxTTL", now + int64(store.MaxTTL) - int64(m), now, m, store.MaxTTL, true},
		{"beyond MaxTTL: no expiry", now + int64(store.MaxTTL), now, m, 0, false},
	} {
		got, exp := store.TTL(c.idleAt, c.now, c.margin)
		if got != c.want || exp != c.wantExpire {
			t.Errorf("%s: TTL(%d, %d, %v) = %v, %v; want %v, %v", c.name, c.idleAt, c.now, c.margin, got, exp, c.want, c.wantExpire)
		}
	}
}
