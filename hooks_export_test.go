package flux

import "context"

// stubEngine answers single checks at once with a fixed decision, without
// a shard; everything else goes to the real engine it wraps.
type stubEngine struct {
	engine
	d Decision
}

func (s stubEngine) check(context.Context, string, int64) (Decision, error) { return s.d, nil }

// StubShardsForTest makes l answer single checks with d at once instead of
// asking a shard, so benchmarks can measure what the rest of a check
// (validation, hooks, middleware) costs without the noise of a channel
// round trip. Call it before l is used.
func StubShardsForTest(l *Limiter, d Decision) {
	l.eng = stubEngine{engine: l.eng, d: d}
}
