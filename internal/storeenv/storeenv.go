// Package storeenv tells tests where their store servers are: the backends'
// own tests in store/, the root package's store tests, node/ and
// cmd/flux-node.
//
// Tests of a server backend read the server's URL from an environment
// variable (FLUX_REDIS_URL, FLUX_POSTGRES_URL). Without it they skip, with
// a message saying how to enable them; with FLUX_REQUIRE_STORES=1 a missing
// or unreachable server fails the run instead.
package storeenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
)

// The variables the tests read, and values that work on a default local
// install.
const (
	Redis           = "FLUX_REDIS_URL"
	Postgres        = "FLUX_POSTGRES_URL"
	Require         = "FLUX_REQUIRE_STORES"
	ExampleRedis    = "redis://127.0.0.1:6379/0"
	ExamplePostgres = "postgres://postgres@127.0.0.1:5432/test"
)

func required() bool { return os.Getenv(Require) == "1" }

// URL returns the value of env, or skips the test (fails it under
// FLUX_REQUIRE_STORES=1) when it is unset.
func URL(tb testing.TB, env, example string) string {
	tb.Helper()
	if u := os.Getenv(env); u != "" {
		return u
	}
	msg := "set " + env + " to run this test against a real server, e.g. " + env + "=" + example
	if required() {
		tb.Fatalf("%s is required (%s=1): %s", env, Require, msg)
	}
	tb.Skip(msg)
	return ""
}

// RedisURL is URL for FLUX_REDIS_URL; PostgresURL for FLUX_POSTGRES_URL.
func RedisURL(tb testing.TB) string    { tb.Helper(); return URL(tb, Redis, ExampleRedis) }
func PostgresURL(tb testing.TB) string { tb.Helper(); return URL(tb, Postgres, ExamplePostgres) }

// Unreachable skips the test (fails it under FLUX_REQUIRE_STORES=1)
// because the server at env's URL did not answer.
func Unreachable(tb testing.TB, env string, err error) {
	tb.Helper()
	if required() {
		tb.Fatalf("server at %s=%s unreachable (%s=1): %v", env, os.Getenv(env), Require, err)
	}
	tb.Skipf("server at %s=%s unreachable: %v (unset %s to skip quietly)", env, os.Getenv(env), err, env)
}

// Suffix returns a random lowercase hex string that names one test's
// private key prefix, schema or bucket.
func Suffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Optional is URL for tests that run several backends: instead of skipping
// the whole test it logs why this backend is left out and returns "" (and
// fails the test under FLUX_REQUIRE_STORES=1).
func Optional(tb testing.TB, env, example string) string {
	tb.Helper()
	if u := os.Getenv(env); u != "" {
		return u
	}
	msg := "set " + env + " to run this test against a real server too, e.g. " + env + "=" + example
	if required() {
		tb.Fatalf("%s is required (%s=1): %s", env, Require, msg)
	}
	tb.Log("skipping this backend: " + msg)
	return ""
}

// OptionalUnreachable is Unreachable for Optional: it logs (fails under
// FLUX_REQUIRE_STORES=1) that the server did not answer.
func OptionalUnreachable(tb testing.TB, env string, err error) {
	tb.Helper()
	if required() {
		tb.Fatalf("server at %s=%s unreachable (%s=1): %v", env, os.Getenv(env), Require, err)
	}
	tb.Logf("skipping this backend: server at %s=%s unreachable: %v", env, os.Getenv(env), err)
}
