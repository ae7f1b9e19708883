package flux

import (
	"fmt"

	"github.com/fluxlimiter/flux/shard"
)

// StoreConfig connects a Limiter to a store (WithStore). Its fields are
// documented on shard.Persistence: Store, Limiter (the namespace of this
// limiter's keys), Through (write-through instead of write-behind),
// FlushEvery, Timeout (default 50 ms), OnFailure and RetryAfter.
//
// With a store, a key the limiter does not hold is loaded before it is
// decided: its requests wait (other keys are served meanwhile), and
// concurrent requests share one load. A load that fails or times out is
// never taken as "this key is fresh": the failure policy decides.
//
// Under write-behind a restart loses at most one FlushEvery of admissions
// (Close saves everything dirty); under write-through a decision that
// admitted something is returned only once its state is saved, so a crash
// loses nothing that was admitted.
type StoreConfig = shard.Persistence

// StoreFailure is the policy when the store fails or does not answer in
// time: StoreFailLocal (the default), StoreFailOpen or StoreFailClosed.
type StoreFailure = shard.Failure

// Store failure policies.
const (
	// StoreFailLocal decides from the limiter's memory; a key not loaded
	// since the limiter started is denied, so a restart never forgives.
	// Under write-through an admission whose save fails stays admitted and
	// the save is retried.
	StoreFailLocal = shard.FailLocal
	// StoreFailOpen admits requests the store cannot back.
	StoreFailOpen = shard.FailOpen
	// StoreFailClosed denies them; under write-through an admission whose
	// save fails is denied and rolled back.
	StoreFailClosed = shard.FailClosed
)

// WithStore keeps the limiter's state in a store (see StoreConfig and the
// store/ packages: memstore, redisstore, pgstore, natskv) so that it
// survives restarts.
func WithStore(cfg StoreConfig) Option {
	return func(o *options) {
		switch {
		case cfg.Store == nil:
			o.err = fmt.Errorf("%w: WithStore without a store", ErrInvalidOption)
		case cfg.Limiter == "":
			o.err = fmt.Errorf("%w: WithStore needs the limiter's name (its namespace in the store)", ErrInvalidOption)
		case cfg.FlushEvery < 0 || cfg.Timeout < 0 || cfg.RetryAfter < 0:
			o.err = fmt.Errorf("%w: negative store interval", ErrInvalidOption)
		case cfg.OnFailure > StoreFailClosed:
			o.err = fmt.Errorf("%w: unknown store failure policy %d", ErrInvalidOption, cfg.OnFailure)
		}
		o.persist = &cfg
	}
}

// StoreStats adds up the shards' store counters (zero without a store).
func (l *Limiter) StoreStats() shard.StoreStats {
	var t shard.StoreStats
	for _, st := range l.eng.storeStats() {
		t.Loads += st.Loads
		t.LoadErrors += st.LoadErrors
		t.Saves += st.Saves
		t.SaveErrors += st.SaveErrors
		t.Fallbacks += st.Fallbacks
		t.Foreign += st.Foreign
		t.Dirty += st.Dirty
	}
	return t
}
