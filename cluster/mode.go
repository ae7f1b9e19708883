package cluster

import (
	"fmt"
	"time"

	"github.com/fluxlimiter/flux/failure"
)

// Mode is how a limiter coordinates with the other nodes of a cluster.
type Mode uint8

// The modes (docs/CLUSTER.md states the guarantee of each).
const (
	// Local: no coordination; each node enforces the limit on its own.
	Local Mode = iota
	// BestEffort: each node decides locally and gossips what it admitted
	// every sync interval; peers add it to their state.
	BestEffort
	// Strict: the owner of a key (rendezvous hash over live members)
	// decides; other nodes forward the check and relay the answer.
	Strict
	// Hybrid: decide locally while the local view shows more than a
	// threshold of the key's capacity left, ask the owner otherwise;
	// gossip as BestEffort does.
	Hybrid
)

// String returns the configuration name: "local", "best-effort",
// "strict" or "hybrid".
func (m Mode) String() string {
	switch m {
	case Local:
		return "local"
	case BestEffort:
		return "best-effort"
	case Strict:
		return "strict"
	case Hybrid:
		return "hybrid"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ParseMode parses a configuration name ("" means local).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "local":
		return Local, nil
	case "best-effort", "gossip":
		return BestEffort, nil
	case "strict":
		return Strict, nil
	case "hybrid":
		return Hybrid, nil
	}
	return 0, fmt.Errorf("%w: mode %q (want local, best-effort, strict or hybrid)", ErrInvalidConfig, s)
}

// Failure is the policy when a key's owner does not answer in time.
//
// Deprecated: use failure.Policy, the one vocabulary of the cluster, the
// store and httplimit.
type Failure = failure.Policy

// The failure policies under their former names.
const (
	// Deprecated: use failure.Local.
	FailLocal = failure.Local
	// Deprecated: use failure.Open.
	FailOpen = failure.Open
	// Deprecated: use failure.Closed.
	FailClosed = failure.Closed
)

// ParseFailure parses a failure policy name ("" means local); the error
// wraps ErrInvalidConfig.
//
// Deprecated: use failure.Parse.
func ParseFailure(s string) (Failure, error) {
	p, err := failure.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return p, nil
}

// Path says where a decision came from.
type Path uint8

// The paths, the values of the path label of
// flux_cluster_answers_total{limiter,path}.
const (
	// PathLocal: this node's limiter decided, without a network hop (in
	// strict mode: this node owns the key).
	PathLocal Path = iota
	// PathOwner: the key's owner, another node, decided.
	PathOwner
	// PathFallback: the owner did not answer in time; the failure policy
	// decided.
	PathFallback
	numPaths
)

// String returns "local", "owner" or "fallback".
func (p Path) String() string {
	switch p {
	case PathLocal:
		return "local"
	case PathOwner:
		return "owner"
	case PathFallback:
		return "fallback"
	}
	return fmt.Sprintf("Path(%d)", uint8(p))
}

// Defaults of LimiterConfig.
const (
	DefaultSyncInterval    = 15 * time.Millisecond
	DefaultSyncBatch       = 512
	DefaultOwnerDeadline   = 250 * time.Millisecond
	DefaultHybridThreshold = 0.5
)

// LimiterConfig is how one limiter takes part in the cluster. Zero fields
// take the defaults.
type LimiterConfig struct {
	Mode Mode
	// SyncInterval is how long admissions are aggregated before they are
	// published (DefaultSyncInterval); the first admission after a
	// publication arms the timer.
	SyncInterval time.Duration
	// SyncBatch publishes at once when this many distinct keys are waiting
	// (DefaultSyncBatch).
	SyncBatch int
	// OwnerDeadline is how long a forwarded check waits for the owner
	// (DefaultOwnerDeadline) before OnOwnerFailure decides.
	OwnerDeadline time.Duration
	// OnOwnerFailure is the failure policy: failure.Local (the default)
	// decides on the local view and gossips what it admits; failure.Open
	// allows the request without recording it; failure.Closed denies it,
	// with RetryAfter set to OwnerDeadline.
	OnOwnerFailure failure.Policy
	// HybridThreshold is, in hybrid mode, the share of the key's capacity
	// that must remain in the local view after the request for the node to
	// decide locally (DefaultHybridThreshold; between 0 and 1).
	HybridThreshold float64
}

func (lc *LimiterConfig) setDefaults() error {
	if lc.Mode > Hybrid {
		return fmt.Errorf("%w: mode %d", ErrInvalidConfig, lc.Mode)
	}
	if !lc.OnOwnerFailure.Valid() {
		return fmt.Errorf("%w: failure policy %d", ErrInvalidConfig, lc.OnOwnerFailure)
	}
	if lc.SyncInterval < 0 || lc.SyncBatch < 0 || lc.OwnerDeadline < 0 {
		return fmt.Errorf("%w: negative sync interval, sync batch or owner deadline", ErrInvalidConfig)
	}
	if lc.HybridThreshold < 0 || lc.HybridThreshold > 1 || lc.HybridThreshold != lc.HybridThreshold {
		return fmt.Errorf("%w: hybrid threshold %v (want 0 to 1)", ErrInvalidConfig, lc.HybridThreshold)
	}
	if lc.SyncInterval == 0 {
		lc.SyncInterval = DefaultSyncInterval
	}
	if lc.SyncBatch == 0 {
		lc.SyncBatch = DefaultSyncBatch
	}
	if lc.OwnerDeadline == 0 {
		lc.OwnerDeadline = DefaultOwnerDeadline
	}
	if lc.HybridThreshold == 0 {
		lc.HybridThreshold = DefaultHybridThreshold
	}
	return nil
}
