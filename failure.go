package flux

import "fmt"

// FailurePolicy says what to answer when the authority behind a decision
// cannot answer in time: the store of a limiter (StoreConfig.OnFailure),
// the key's owner in a cluster (cluster.LimiterConfig.OnOwnerFailure), or
// the limiter behind an HTTP middleware (httplimit.WithFailurePolicy). The
// zero value is FailLocal. Every front end spells the policies the same
// way, in Go and in configuration files ("local", "open", "closed").
type FailurePolicy uint8

// The failure policies.
const (
	// FailLocal decides from what this process knows: a store-backed
	// limiter from its memory (denying keys it has not loaded since it
	// started, so a restart never forgives), a cluster node from its local
	// view. Where there is no local view (an HTTP middleware in front of a
	// remote limiter) it fails closed.
	FailLocal FailurePolicy = iota
	// FailOpen admits the request without recording it.
	FailOpen
	// FailClosed denies the request.
	FailClosed
)

// String returns "local", "open" or "closed".
func (p FailurePolicy) String() string {
	switch p {
	case FailLocal:
		return "local"
	case FailOpen:
		return "open"
	case FailClosed:
		return "closed"
	}
	return fmt.Sprintf("FailurePolicy(%d)", uint8(p))
}

// ParseFailurePolicy parses "local", "open" or "closed" ("" is local).
// The error wraps ErrInvalidArgument.
func ParseFailurePolicy(s string) (FailurePolicy, error) {
	switch s {
	case "", "local":
		return FailLocal, nil
	case "open":
		return FailOpen, nil
	case "closed":
		return FailClosed, nil
	}
	return 0, fmt.Errorf("%w: failure policy %q (want local, open or closed)", ErrInvalidArgument, s)
}

// valid reports whether p is one of the three policies.
func (p FailurePolicy) valid() bool { return p <= FailClosed }
