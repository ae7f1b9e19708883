// Package flux is an exact, fast rate limiter for Go services.
//
// A Limiter spreads keys over shard goroutines by a hash. Each shard owns
// the state of its keys in a hash table of its own and answers requests
// sent over its mailbox, so no lock guards the state and a check costs one
// channel round trip. CheckBatch sends one message per shard for a whole
// batch, which is the fast path when there is more than one key to check
// at a time; the async API (CheckAsync, Future) lets one goroutine keep
// many checks in flight.
//
// The default algorithm is GCRA as FluxLimiter defines it: a Limit of Rate
// requests per second with Burst extra requests admits Burst+1 requests at
// once after idle (floor(Burst)+1 when Burst is fractional), then one every
// 1/Rate seconds.
package flux
