// Package storeenv tells store tests where their servers are.
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

// Require is the variable that turns skips into failures.
const Require = "FLUX_REQUIRE_STORES"

// required reports whether FLUX_REQUIRE_STORES=1.
func required() bool { return os.Getenv(Require) == "1" }

// URL returns the value of env (such as "FLUX_REDIS_URL"), or skips the
// test (fails it under FLUX_REQUIRE_STORES=1) when it is unset. example is
// a value that works on a default local install.
func URL(tb testing.TB, env, example string) string {
	tb.Helper()
	u := os.Getenv(env)
	if u != "" {
		return u
	}
	msg := "set " + env + " to run this test against a real server, e.g. " + env + "=" + example
	if required() {
		tb.Fatalf("%s is required (%s=1): %s", env, Require, msg)
	}
	tb.Skip(msg)
	return ""
}

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
