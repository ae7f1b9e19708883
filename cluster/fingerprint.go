package cluster

import (
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"

	flux "github.com/fluxlimiter/flux"
)

// canonicalLimit writes l in a form that depends only on what the limit
// means, never on how this process holds it, so that two nodes configured
// alike compute the same fingerprint:
//
//	algorithm=gcra rate=100 burst=20 limit=0 window=0 calendar="" location="UTC"
//
// The algorithm "" is written as gcra (what it means); floats in their
// shortest exact decimal form; the window in nanoseconds; the location by
// its name (a nil Location is UTC), not by the address of the
// *time.Location. Every field of flux.Limit is written: a field added to
// it must be added here, or limits differing only in it would look alike
// (TestCanonicalLimitCoversEveryField fails until it is).
//
// Two zones with the same name but different rules (a FixedZone named like
// a tz database zone, or tz databases of different versions) are taken as
// equal: the name is what the configuration says.
func canonicalLimit(l flux.Limit) string {
	alg := l.Algorithm
	if alg == "" {
		alg = flux.GCRA
	}
	loc := "UTC"
	if l.Location != nil {
		loc = l.Location.String()
	}
	b := make([]byte, 0, 96)
	b = append(b, "algorithm="...)
	b = append(b, alg...)
	b = append(b, " rate="...)
	b = strconv.AppendFloat(b, l.Rate, 'g', -1, 64)
	b = append(b, " burst="...)
	b = strconv.AppendFloat(b, l.Burst, 'g', -1, 64)
	b = append(b, " limit="...)
	b = strconv.AppendInt(b, int64(l.Limit), 10)
	b = append(b, " window="...)
	b = strconv.AppendInt(b, int64(l.Window), 10)
	b = append(b, " calendar="...)
	b = strconv.AppendQuote(b, string(l.Calendar))
	b = append(b, " location="...)
	b = strconv.AppendQuote(b, loc)
	return string(b)
}

// fingerprint hashes the name, mode and limit (in its canonical form, see
// canonicalLimit) of every registered limiter.
func (c *Coordinator) fingerprint() uint64 {
	m := *c.entries.Load()
	h := fnv.New64a()
	for _, name := range slices.Sorted(maps.Keys(m)) {
		e := m[name]
		fmt.Fprintf(h, "%q %s %s\n", name, e.cfg.Mode, canonicalLimit(e.lim.Limit()))
	}
	return h.Sum64()
}
