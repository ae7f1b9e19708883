// Package failure is the one vocabulary of failure policies: what to answer
// when the authority behind a decision cannot answer in time. A limiter's
// store (flux.StoreConfig.OnFailure), a key's owner in a cluster
// (cluster.LimiterConfig.OnOwnerFailure) and the limiter behind an HTTP
// middleware (httplimit.WithFailurePolicy) all take a Policy, and
// flux-node's configuration spells it the same way ("local", "open",
// "closed").
package failure

import (
	"errors"
	"fmt"
)

// Policy is a failure policy. The zero value is Local. Policies are plain
// values, safe to share between goroutines.
type Policy uint8

// The policies.
const (
	// Local decides from what this process knows: a store-backed
	// limiter from its memory (denying keys it has not loaded since it
	// started, so a restart never forgives), a cluster node from its local
	// view. Where there is no local view (an HTTP middleware in front of a
	// remote limiter) it fails closed.
	Local Policy = iota
	// Open admits the request without recording it.
	Open
	// Closed denies the request.
	Closed
)

// String returns "local", "open" or "closed".
func (p Policy) String() string {
	switch p {
	case Local:
		return "local"
	case Open:
		return "open"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// ErrUnknown: a name or value that is not one of the three policies.
var ErrUnknown = errors.New("failure: unknown policy")

// Parse parses "local", "open" or "closed" ("" is local). The error wraps
// ErrUnknown.
func Parse(s string) (Policy, error) {
	switch s {
	case "", "local":
		return Local, nil
	case "open":
		return Open, nil
	case "closed":
		return Closed, nil
	}
	return 0, fmt.Errorf("%w %q (want local, open or closed)", ErrUnknown, s)
}

// Valid reports whether p is one of the three policies.
func (p Policy) Valid() bool { return p <= Closed }
