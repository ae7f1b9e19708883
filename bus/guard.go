package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrSecret: the cluster secret is missing or shorter than MinSecretLen.
var ErrSecret = errors.New("bus: cluster secret missing or too short")

// Bounds on what one peer may send, when Security leaves them zero.
const (
	// DefaultMaxItemsPerMessage bounds the updates of one gossip message;
	// senders split larger batches.
	DefaultMaxItemsPerMessage = 1 << 16
	// DefaultPeerItemsPerSecond bounds the updates one peer may have
	// applied per second (with a burst of as many): far above what one
	// node admits of distinct keys, it caps what a faulty or hostile peer
	// can make every node store.
	DefaultPeerItemsPerSecond = 1 << 22
)

// Security is how a bus authenticates what nodes send each other and
// bounds what it accepts from one peer. The zero value is refused by
// NewNATS: give Secret, or set Insecure.
type Security struct {
	// Secret is the cluster secret, shared by every node of the cluster,
	// at least MinSecretLen bytes. Every message is signed with a key
	// derived from it and the cluster name; what does not verify is
	// dropped and counted (Stats.Unauthenticated).
	Secret []byte
	// Insecure sends and accepts unsigned messages: anyone who can publish
	// on the cluster's subjects can then forge gossip, heartbeats and
	// forwarded checks. For tests and in-process clusters only.
	Insecure bool
	// MaxSkew is how far a signed message's stamp may be from the
	// receiver's clock (DefaultMaxSkew). Older messages could be replays
	// the receiver no longer remembers; keep nodes' clocks in sync well
	// within it.
	MaxSkew time.Duration
	// MaxItemsPerMessage bounds the updates of one gossip message
	// (DefaultMaxItemsPerMessage); a message with more is dropped and
	// counted (Stats.Throttled).
	MaxItemsPerMessage int
	// PeerItemsPerSecond bounds the updates accepted from one peer per
	// second (DefaultPeerItemsPerSecond; negative: no bound). Messages
	// beyond it are dropped and counted (Stats.Throttled).
	PeerItemsPerSecond float64
	// Now is the clock messages are stamped and checked with (time.Now).
	Now func() time.Time
}

func (s Security) validate() error {
	if !s.Insecure && len(s.Secret) < MinSecretLen {
		return fmt.Errorf("%w: %d bytes, want at least %d (or Insecure)", ErrSecret, len(s.Secret), MinSecretLen)
	}
	if s.MaxSkew < 0 || s.MaxItemsPerMessage < 0 {
		return fmt.Errorf("bus: negative MaxSkew %v or MaxItemsPerMessage %d", s.MaxSkew, s.MaxItemsPerMessage)
	}
	return nil
}

// guard is what a bus runs every message through: it seals what the node
// sends, and verifies, bounds and counts what it receives, before any
// Handler sees it. Safe for simultaneous use.
type guard struct {
	self     string
	auth     *authenticator // nil when insecure
	maxItems int
	rate     float64
	now      func() time.Time

	malformed, unauth, replays, spoofed, throttled atomic.Uint64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds the per-peer rate state; past it the state is reset
// (only reachable with Insecure, where sender ids are not authenticated).
const maxBuckets = 4096

func newGuard(self, cluster string, s Security) *guard {
	if s.MaxSkew == 0 {
		s.MaxSkew = DefaultMaxSkew
	}
	if s.MaxItemsPerMessage == 0 {
		s.MaxItemsPerMessage = DefaultMaxItemsPerMessage
	}
	if s.PeerItemsPerSecond == 0 {
		s.PeerItemsPerSecond = DefaultPeerItemsPerSecond
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	g := &guard{self: self, maxItems: s.MaxItemsPerMessage, rate: s.PeerItemsPerSecond, now: s.Now, buckets: make(map[string]*bucket)}
	if !s.Insecure {
		g.auth = newAuthenticator(self, cluster, s.Secret, s.MaxSkew, s.Now)
	}
	return g
}

func (g *guard) stats() Stats {
	return Stats{
		Malformed:       g.malformed.Load(),
		Unauthenticated: g.unauth.Load(),
		Replayed:        g.replays.Load(),
		Spoofed:         g.spoofed.Load(),
		Throttled:       g.throttled.Load(),
	}
}

// wrap encodes a message of kind with enc, sealed for to (re: the request
// a reply answers) unless insecure, and returns it with its seq.
func (g *guard) wrap(dst []byte, kind byte, to string, re uint64, enc func([]byte) []byte) ([]byte, uint64) {
	if g.auth == nil {
		return enc(dst), 0
	}
	start := len(dst)
	dst, seq := g.auth.begin(dst, kind, to, re)
	dst = enc(dst)
	return g.auth.seal(dst, start), seq
}

// count records a refusal.
func (g *guard) count(v verdict) {
	switch v {
	case unauthenticated:
		g.unauth.Add(1)
	case replayed:
		g.replays.Add(1)
	case malformedEnv:
		g.malformed.Add(1)
	}
}

// open verifies data addressed to to and returns its sender and message;
// insecure, it trusts hdrFrom (the transport's claim). ok is false when the
// message was refused (and counted) or is this node's own.
func (g *guard) open(data []byte, to, hdrFrom string) (env envelope, ok bool) {
	if g.auth == nil {
		return envelope{from: hdrFrom, msg: data}, true
	}
	env, v := g.auth.open(data, to)
	if v != accepted {
		g.count(v)
		return envelope{}, false
	}
	return env, true
}

// fresh is the last check of a verified message: not seen before.
func (g *guard) fresh(env *envelope) bool {
	if g.auth == nil {
		return true
	}
	if !g.auth.fresh(env) {
		g.replays.Add(1)
		return false
	}
	return true
}

// allow takes n items from from's allowance for this second.
func (g *guard) allow(from string, n int) bool {
	if g.rate < 0 {
		return true
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.buckets[from]
	if b == nil {
		if len(g.buckets) >= maxBuckets {
			clear(g.buckets)
		}
		b = &bucket{tokens: g.rate, last: now}
		g.buckets[from] = b
	}
	b.tokens = min(g.rate, b.tokens+now.Sub(b.last).Seconds()*g.rate)
	b.last = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// dispatchPub verifies, decodes and bounds a published message (gossip or
// heartbeat) and hands it to h. hdrFrom is the sender the transport
// claims, trusted only when insecure.
func (g *guard) dispatchPub(h Handler, hdrFrom string, data []byte) {
	env, ok := g.open(data, "", hdrFrom)
	if !ok {
		return
	}
	msg := env.msg
	if len(msg) == 0 {
		g.malformed.Add(1)
		return
	}
	switch msg[0] {
	case kindUpdates:
		u, err := decodeUpdates(msg)
		if err != nil {
			g.malformed.Add(1)
			return
		}
		if len(u.Items) > g.maxItems {
			g.throttled.Add(1)
			return
		}
		if !g.fresh(&env) {
			return
		}
		if !g.allow(env.from, len(u.Items)) {
			g.throttled.Add(1)
			return
		}
		h.HandleUpdates(env.from, u)
	case kindHeartbeat:
		hb, err := decodeHeartbeat(msg)
		if err != nil {
			g.malformed.Add(1)
			return
		}
		// A node speaks for itself only: a heartbeat naming another node
		// could announce its departure, or a phantom member.
		if hb.Node != env.from {
			g.spoofed.Add(1)
			return
		}
		if !g.fresh(&env) {
			return
		}
		h.HandleHeartbeat(hb)
	default:
		g.malformed.Add(1)
	}
}

// serveRequest verifies and decodes a request (a forward or a sync), runs
// the handler and returns the encoded replies (a sync's in chunks of at
// most chunk bytes of states); nil means no reply (refused or malformed,
// counted).
func (g *guard) serveRequest(ctx context.Context, h Handler, hdrFrom string, data []byte, chunk int) [][]byte {
	env, ok := g.open(data, g.self, hdrFrom)
	if !ok {
		return nil
	}
	msg := env.msg
	if len(msg) == 0 {
		g.malformed.Add(1)
		return nil
	}
	switch msg[0] {
	case kindForward:
		checks, err := decodeForward(msg)
		if err != nil {
			g.malformed.Add(1)
			return nil
		}
		if !g.fresh(&env) {
			return nil
		}
		out := make([]Result, len(checks))
		h.HandleForward(ctx, env.from, checks, out)
		b, _ := g.wrap(nil, kindForwardReply, env.from, env.seq, func(dst []byte) []byte { return appendForwardReply(dst, out) })
		return [][]byte{b}
	case kindSync:
		name, err := decodeSync(msg)
		if err != nil {
			g.malformed.Add(1)
			return nil
		}
		if !g.fresh(&env) {
			return nil
		}
		states, err := h.HandleSync(ctx, env.from, name)
		reply := func(last bool, err error, i, j int) []byte {
			b, _ := g.wrap(nil, kindSyncReply, env.from, env.seq, func(dst []byte) []byte {
				if err != nil {
					return appendSyncReply(dst, nil, true, err)
				}
				return appendSyncReply(dst, states[i:j], last, nil)
			})
			return b
		}
		if err != nil {
			return [][]byte{reply(true, err, 0, 0)}
		}
		var out [][]byte
		start, size := 0, 0
		for i := range states {
			s := stateSize(&states[i])
			if chunk > 0 && size+s > chunk && i > start {
				out = append(out, reply(false, nil, start, i))
				start, size = i, 0
			}
			size += s
		}
		return append(out, reply(true, nil, start, len(states)))
	}
	g.malformed.Add(1)
	return nil
}

// openReply verifies a reply of kind from node to the request seq and
// returns its message. A reply that does not verify is counted and
// reported as malformed to the caller, who waits for no other.
func (g *guard) openReply(data []byte, kind byte, node string, seq uint64) ([]byte, error) {
	env, ok := g.open(data, g.self, node)
	switch {
	case !ok:
		return nil, errorf(ErrMalformed, "reply from %s refused", node)
	case g.auth != nil && (env.from != node || env.re != seq):
		g.replays.Add(1)
		return nil, errorf(ErrMalformed, "reply from %s does not answer this request", node)
	case len(env.msg) == 0 || env.msg[0] != kind:
		g.malformed.Add(1)
		return nil, errorf(ErrMalformed, "reply from %s of another kind", node)
	case !g.fresh(&env):
		return nil, errorf(ErrMalformed, "reply from %s seen before", node)
	}
	return env.msg, nil
}
