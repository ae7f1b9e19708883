// Package integration holds no code: its tests run flux.Limiter with
// WithStore and WithAtomicStore against the real backends (Redis,
// PostgreSQL, NATS JetStream KV), through a TCP proxy that the tests cut to
// make a store go down, and its benchmarks measure checks per second per
// backend and write mode (docs/STORES.md, "Running the store tests").
//
// The Redis and PostgreSQL tests read FLUX_REDIS_URL and FLUX_POSTGRES_URL
// and skip without them (fail under FLUX_REQUIRE_STORES=1); the NATS tests
// always run, on an embedded server.
package integration
