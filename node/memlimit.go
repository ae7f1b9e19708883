package node

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// MaxKeysAuto, as Config.MaxKeys (the default; `max_keys: -1`,
// `--max-keys -1`), derives each limiter's key bound from the memory
// available to the process: see DerivedMaxKeys.
const MaxKeysAuto = -1

const (
	// keyBudgetBytes is the memory one key held is assumed to cost: the
	// shard's entry (61–70 bytes, docs/OPERATIONS.md "Sizing"), a key of a
	// few dozen bytes, and the table's slack while it grows, rounded up.
	keyBudgetBytes = 256
	// keyMemoryShare is the share of the memory available that the keys of
	// all limiters together may take: the rest is for NATS buffers, the
	// requests in flight and the garbage collector's headroom.
	keyMemoryShare = 0.5
	// minDerivedMaxKeys is the least derived bound, so that a small
	// container still serves a useful number of keys.
	minDerivedMaxKeys = 10_000
)

// The files memoryAvailable reads; tests point them elsewhere.
var (
	cgroupV2Max = "/sys/fs/cgroup/memory.max"
	cgroupV1Max = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
	procMeminfo = "/proc/meminfo"
	memoryLimit = func() int64 { return debug.SetMemoryLimit(-1) }
)

// memoryAvailable returns the bytes of memory the process may use and
// where that figure comes from: GOMEMLIMIT (or debug.SetMemoryLimit) when
// set, else the cgroup's memory limit (v2, then v1) when there is one,
// else the machine's physical memory; 0 and "" when none is known.
func memoryAvailable() (int64, string) {
	if l := memoryLimit(); l > 0 && l < math.MaxInt64 {
		return l, "GOMEMLIMIT"
	}
	var cg int64
	for _, p := range []string{cgroupV2Max, cgroupV1Max} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		v, err := strconv.ParseInt(s, 10, 64)
		// "max" (v2) or a huge value (v1's "no limit", about 2^63) means
		// no limit.
		if err == nil && v > 0 && v < 1<<60 {
			cg = v
			break
		}
	}
	phys := physicalMemory()
	switch {
	case cg > 0 && (phys == 0 || cg < phys):
		return cg, "cgroup"
	case phys > 0:
		return phys, "physical memory"
	}
	return 0, ""
}

// physicalMemory returns MemTotal of /proc/meminfo in bytes, or 0.
func physicalMemory() int64 {
	b, err := os.ReadFile(procMeminfo)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || kb <= 0 {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}

// DerivedMaxKeys returns the key bound of each of limiters limiters when
// the process may use memory bytes: half of it shared equally among the
// limiters at 256 bytes a key, at least 10 000 keys. With memory unknown
// (0) it returns 0: no bound. It is a pure function, safe for concurrent
// use.
func DerivedMaxKeys(memory int64, limiters int) int {
	if memory <= 0 {
		return 0
	}
	limiters = max(limiters, 1)
	k := int64(float64(memory)*keyMemoryShare) / keyBudgetBytes / int64(limiters)
	return int(min(max(k, minDerivedMaxKeys), math.MaxInt32))
}

// maxKeys is the key bound of a new limiter under cfg: cfg.MaxKeys, or
// the derived bound for MaxKeysAuto, with the source of the figure.
func maxKeys(cfg Config) (int, string) {
	if cfg.MaxKeys != MaxKeysAuto {
		return cfg.MaxKeys, "max_keys"
	}
	mem, src := memoryAvailable()
	return DerivedMaxKeys(mem, len(cfg.Limiters)), src
}
