package node

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestDerivedMaxKeys(t *testing.T) {
	for _, tc := range []struct {
		mem      int64
		limiters int
		want     int
	}{
		{0, 1, 0},                         // memory unknown: no bound
		{4 << 30, 1, 8_388_608},           // 4 GiB: 2 GiB of keys at 256 bytes
		{4 << 30, 4, 2_097_152},           // shared equally among the limiters
		{4 << 30, 0, 8_388_608},           // no limiter counts as one
		{16 << 20, 8, minDerivedMaxKeys},  // a tiny container keeps a floor
		{math.MaxInt64, 1, math.MaxInt32}, // clamped
	} {
		if got := DerivedMaxKeys(tc.mem, tc.limiters); got != tc.want {
			t.Errorf("DerivedMaxKeys(%d, %d) = %d, want %d", tc.mem, tc.limiters, got, tc.want)
		}
	}
}

// memoryAvailable prefers GOMEMLIMIT, then a cgroup limit below physical
// memory, then physical memory.
func TestMemoryAvailable(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	saved := []string{cgroupV2Max, cgroupV1Max, procMeminfo}
	savedLimit := memoryLimit
	t.Cleanup(func() {
		cgroupV2Max, cgroupV1Max, procMeminfo = saved[0], saved[1], saved[2]
		memoryLimit = savedLimit
	})
	limit := int64(math.MaxInt64)
	memoryLimit = func() int64 { return limit }
	procMeminfo = write("meminfo", "MemFree:  100 kB\nMemTotal:       8000000 kB\n")
	cgroupV1Max = filepath.Join(dir, "none")

	check := func(what string, want int64, wantSrc string) {
		t.Helper()
		got, src := memoryAvailable()
		if got != want || src != wantSrc {
			t.Errorf("%s: %d from %q, want %d from %q", what, got, src, want, wantSrc)
		}
	}
	cgroupV2Max = write("v2", "max\n")
	check("cgroup without a limit", 8_000_000*1024, "physical memory")
	cgroupV2Max = write("v2b", "1073741824\n")
	check("cgroup limit", 1<<30, "cgroup")
	cgroupV2Max = write("v2c", "99999999999999\n")
	check("cgroup limit above physical memory", 8_000_000*1024, "physical memory")
	cgroupV2Max = filepath.Join(dir, "none")
	cgroupV1Max = write("v1", "9223372036854771712\n")
	check("cgroup v1 without a limit", 8_000_000*1024, "physical memory")
	cgroupV1Max = write("v1b", "536870912\n")
	check("cgroup v1 limit", 512<<20, "cgroup")
	limit = 256 << 20
	check("GOMEMLIMIT", 256<<20, "GOMEMLIMIT")
	limit = math.MaxInt64
	procMeminfo = filepath.Join(dir, "none")
	cgroupV1Max = filepath.Join(dir, "none")
	check("nothing known", 0, "")
}

// The default config derives the bound; an explicit max_keys wins,
// 0 included.
func TestMaxKeysDefault(t *testing.T) {
	cfg := DefaultConfig()
	if cfg.MaxKeys != MaxKeysAuto {
		t.Fatalf("default max_keys %d, want MaxKeysAuto", cfg.MaxKeys)
	}
	mem, _ := memoryAvailable()
	if got, _ := maxKeys(cfg); got != DerivedMaxKeys(mem, len(cfg.Limiters)) || (mem > 0 && got < minDerivedMaxKeys) {
		t.Fatalf("derived max_keys %d with %d bytes available", got, mem)
	}
	cfg.MaxKeys = 0
	if got, src := maxKeys(cfg); got != 0 || src != "max_keys" {
		t.Fatalf("max_keys 0: %d from %q, want 0 (no bound)", got, src)
	}
	cfg.MaxKeys = 5
	if got, _ := maxKeys(cfg); got != 5 {
		t.Fatalf("max_keys 5: %d", got)
	}
	cfg.MaxKeys = -2
	if err := cfg.Validate(); err == nil {
		t.Fatal("max_keys -2 accepted")
	}
}
