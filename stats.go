package flux

// Stats are one shard's counters, as Limiter.Stats reports them. The
// shards publish them after each message, so reading them costs no message
// and may lag the requests in flight slightly.
type Stats struct {
	Keys      int    // keys held
	Mailbox   int    // messages waiting
	Evicted   uint64 // idle keys evicted to make room under WithMaxKeys
	Swept     uint64 // idle keys removed by the background sweep
	Refused   uint64 // new keys refused (ErrFull) because the shard was full
	Panics    uint64 // handler panics contained (ErrPanic)
	ClockErrs uint64 // clock failures (ErrClock)

	// The store counters, zero without a store. With StoreAtomic each
	// store check counts as a load, under the shard of its key.
	Loads      uint64 // loads attempted
	LoadErrors uint64 // loads that failed or timed out
	Saves      uint64 // flushes attempted (one store call each)
	SaveErrors uint64 // flushes that failed or timed out
	Fallbacks  uint64 // requests decided by the failure policy
	Foreign    uint64 // loaded states another algorithm wrote, ignored
	Dirty      int    // keys waiting to be saved
}

// Stats returns each shard's counters, in shard order (a shard number is a
// bounded metric label; a key never is). Add them up for the limiter's
// totals.
func (l *Limiter) Stats() []Stats {
	sh, st := l.eng.stats(), l.eng.storeStats()
	out := make([]Stats, len(sh))
	for i, s := range sh {
		out[i] = Stats{Keys: s.Keys, Mailbox: s.Mailbox, Evicted: s.Evicted, Swept: s.Swept,
			Refused: s.Refused, Panics: s.Panics, ClockErrs: s.ClockErrs}
		if i < len(st) {
			t := st[i]
			out[i].Loads, out[i].LoadErrors, out[i].Saves, out[i].SaveErrors = t.Loads, t.LoadErrors, t.Saves, t.SaveErrors
			out[i].Fallbacks, out[i].Foreign, out[i].Dirty = t.Fallbacks, t.Foreign, t.Dirty
		}
	}
	return out
}
