// Package bus carries what the nodes of a Flux cluster tell each other:
// batches of admissions (gossip), heartbeats, checks forwarded to the owner
// of a key, and snapshots for a node that catches up.
//
// Bus is the transport, as hashicorp/raft's Transport is: a small interface
// with two implementations, NATS (NewNATS: plain publish/subscribe for
// gossip and heartbeats, request-reply for forwarded checks and snapshots)
// and an in-memory network for deterministic tests (NewNetwork). On top of
// any Bus this package builds what does not depend on the transport:
// Membership (heartbeats, timeouts, fingerprints, rendezvous ownership) and
// Forwarder (forwarded checks coalesced per owner, as gubernator's global.go
// coalesces hits).
//
// Every message is encoded in the compact binary format documented in
// docs/PROTOCOL.md, by the NATS bus on the wire and by the in-memory bus
// too, so tests exercise the codec. Unless a bus is explicitly Insecure,
// every message is sealed in an envelope signed with the cluster secret
// (Security, auth.go); messages that do not verify, are replays, or are
// malformed are dropped and counted (Stats), never trusted.
package bus

import (
	"context"
	"errors"
	"time"

	flux "github.com/fluxlimiter/flux"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrClosed: the bus (or the Membership or Forwarder) has been closed.
	ErrClosed = errors.New("bus: closed")
	// ErrNoResponders: nothing listens for the destination node; it has
	// left, crashed or is cut off.
	ErrNoResponders = errors.New("bus: no responders")
	// ErrMalformed: a message could not be decoded.
	ErrMalformed = errors.New("bus: malformed message")
	// ErrTooLarge: a message would exceed the transport's payload limit.
	ErrTooLarge = errors.New("bus: message too large")
	// ErrInvalidNode: a node id is empty, too long or uses characters
	// outside [A-Za-z0-9_-].
	ErrInvalidNode = errors.New("bus: invalid node id")
	// ErrUnknownLimiter: the node asked does not have the named limiter.
	ErrUnknownLimiter = errors.New("bus: unknown limiter")
	// ErrRemote: the node asked failed for a reason with no local sentinel.
	ErrRemote = errors.New("bus: remote error")
	// ErrAlreadyListening: Listen was called twice.
	ErrAlreadyListening = errors.New("bus: already listening")
)

// MaxNodeIDLen is the longest node id accepted.
const MaxNodeIDLen = 64

// Updates is a batch of admissions of one limiter, decided by the node that
// publishes them: each item adds Cost for Key at time At (Unix ns), which
// receivers apply with flux.Limiter.Apply without deciding.
type Updates struct {
	Limiter string
	Items   []flux.Update
}

// NodeState is what a heartbeat says about its sender.
type NodeState uint8

// The states a heartbeat can announce.
const (
	// Joining: the sender is catching up and is not a member yet. Active
	// members answer with a heartbeat of their own at once, so the joining
	// node learns who its peers are without waiting a full interval.
	Joining NodeState = iota
	// Active: the sender is a member and may own keys.
	Active
	// Leaving: the sender is shutting down; drop it at once.
	Leaving
)

// String returns "joining", "active" or "leaving".
func (s NodeState) String() string {
	switch s {
	case Joining:
		return "joining"
	case Active:
		return "active"
	case Leaving:
		return "leaving"
	}
	return "unknown"
}

// Heartbeat announces a node. Nodes publish one every Interval; a node that
// misses three in a row is dropped by its peers.
type Heartbeat struct {
	Node  string
	State NodeState
	// Fingerprint summarises the sender's limiter configuration; peers
	// report a mismatch with their own.
	Fingerprint uint64
	// Interval is the sender's heartbeat interval, so that peers time it
	// out by its own pace.
	Interval time.Duration
}

// Check is one check forwarded to the owner of its key.
type Check struct {
	Limiter string
	Key     string
	Cost    int
}

// Result is the owner's answer to one forwarded Check: a decision, or an
// error that wraps the flux sentinel the owner met (flux.ErrFull,
// flux.ErrKeyTooLong, ...) or ErrUnknownLimiter or ErrRemote.
type Result struct {
	Decision flux.Decision
	Err      error
}

// Bus is the transport between the nodes of a cluster.
//
// All methods are safe for simultaneous use. Publish and Heartbeat are fire
// and forget: a nil error means the message was handed to the transport,
// not that anyone received it. Forward and Sync wait for the destination's
// answer until ctx ends; they fail with ErrNoResponders when the
// destination is known to be gone. A Bus does not deliver a node's own
// publications back to it.
type Bus interface {
	// Node returns this node's id.
	Node() string
	// Listen starts delivering incoming messages to h. It is called once,
	// before the node publishes anything it expects answers to.
	Listen(h Handler) error
	// Publish sends a batch of admissions to every other node.
	Publish(ctx context.Context, u Updates) error
	// Heartbeat sends hb to every other node.
	Heartbeat(ctx context.Context, hb Heartbeat) error
	// Forward asks node to decide checks and returns one Result per check,
	// in order.
	Forward(ctx context.Context, node string, checks []Check) ([]Result, error)
	// Sync asks node for the state of every non-idle key of limiter
	// (flux.Limiter.Snapshot on that node).
	Sync(ctx context.Context, node, limiter string) ([]flux.KeyState, error)
	// Close stops delivery and returns once no Handler method is running.
	// It is idempotent. Methods called after Close fail with ErrClosed.
	Close() error
}

// Handler receives what a Bus delivers.
//
// A Bus calls its methods from its own goroutines, possibly several at once
// (gossip, heartbeats, forwarded checks and syncs arrive independently), so
// a Handler must be safe for simultaneous use. Updates from one sender are
// delivered in the order they were published. The Handler owns the slices
// it is given. No method is called after the Bus's Close returns. Methods
// should return promptly: a slow handler delays the messages queued behind
// it, and the transport may drop gossip that piles up (counted in Stats).
type Handler interface {
	// HandleUpdates receives a batch of admissions published by node from.
	HandleUpdates(from string, u Updates)
	// HandleHeartbeat receives a heartbeat.
	HandleHeartbeat(hb Heartbeat)
	// HandleForward decides checks forwarded by node from, filling out
	// (len(out) == len(checks)).
	HandleForward(ctx context.Context, from string, checks []Check, out []Result)
	// HandleSync returns the non-idle state of limiter for node from.
	HandleSync(ctx context.Context, from, limiter string) ([]flux.KeyState, error)
}

// Stats are a bus's counters.
type Stats struct {
	// Malformed counts incoming messages dropped because they could not
	// be decoded.
	Malformed uint64
	// Dropped counts incoming messages lost because the receiver fell
	// behind (NATS slow consumer, full in-memory inbox).
	Dropped uint64
	// Unauthenticated counts messages dropped because they were not
	// signed with the cluster secret (Security).
	Unauthenticated uint64
	// Replayed counts signed messages dropped as replays: seen before,
	// stamped too far from this node's clock, addressed to another node,
	// or a reply to another request.
	Replayed uint64
	// Spoofed counts heartbeats dropped because they named another node
	// than their sender.
	Spoofed uint64
	// Throttled counts gossip messages dropped because they carried more
	// updates than one message or one peer's second may.
	Throttled uint64
}

// ValidNodeID reports whether id can name a node: 1 to MaxNodeIDLen bytes
// of [A-Za-z0-9_-], so that it is a single NATS subject token.
func ValidNodeID(id string) error {
	if len(id) == 0 || len(id) > MaxNodeIDLen {
		return errorf(ErrInvalidNode, "%q: want 1 to %d bytes", id, MaxNodeIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return errorf(ErrInvalidNode, "%q: byte %d is not in [A-Za-z0-9_-]", id, i)
		}
	}
	return nil
}
