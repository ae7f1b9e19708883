package bus

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"sync"
	"sync/atomic"
	"time"
)

// This file authenticates what nodes tell each other. A node holding the
// cluster secret seals every message it sends (gossip, heartbeats,
// forwarded checks, snapshot requests and their replies) in an envelope
// signed with HMAC-SHA256; receivers drop and count what does not verify,
// what is stamped too far from their clock, what was meant for another
// node or another request, and what they have already seen. NATS
// permissions keep clients off the internal subjects; the signature also
// protects a cluster whose NATS lets someone else publish there (a
// client credential, a misconfigured external deployment, a rogue route).
//
// Envelope (kind 'A', version 1), docs/PROTOCOL.md:
//
//	'A' 1  string from  string to  uvarint incarnation  varint at_ns
//	uvarint seq  uvarint re  message...  32 bytes HMAC-SHA256
//
// The MAC covers every byte before it, under a key derived from the secret
// and the cluster name, so two clusters sharing a secret do not accept
// each other's messages. to is "" for gossip and heartbeats, the
// destination for requests, the requester for replies; re is the seq of
// the request a reply answers (0 otherwise). seq counts per sender
// incarnation (a random number drawn at start) and per kind of message,
// from 1.

// MinSecretLen is the shortest cluster secret accepted, in bytes.
const MinSecretLen = 32

// DefaultMaxSkew is NATSConfig.MaxSkew when zero: how far from the
// receiver's clock a message's stamp may be.
const DefaultMaxSkew = 10 * time.Second

const (
	kindEnvelope = 'A'
	macLen       = sha256.Size
	// replayBits is the width of the window of recent sequence numbers
	// remembered per sender and kind of message: concurrent senders may
	// publish slightly out of order.
	replayBits = 1024
)

// channels: one sequence space per kind of message.
const (
	chUpdates = iota
	chHeartbeat
	chForward
	chForwardReply
	chSync
	chSyncReply
	numChannels
)

func channelOf(kind byte) int {
	switch kind {
	case kindUpdates:
		return chUpdates
	case kindHeartbeat:
		return chHeartbeat
	case kindForward:
		return chForward
	case kindForwardReply:
		return chForwardReply
	case kindSync:
		return chSync
	case kindSyncReply:
		return chSyncReply
	}
	return -1
}

// why a message was refused.
type verdict uint8

const (
	accepted verdict = iota
	own              // this node's own message: ignored, not counted
	unauthenticated
	replayed
	malformedEnv
)

// authenticator signs and verifies envelopes for one node. Safe for
// simultaneous use.
type authenticator struct {
	self        string
	incarnation uint64
	maxSkew     time.Duration
	now         func() time.Time
	macs        sync.Pool // hash.Hash, HMAC-SHA256 under the cluster key
	seq         [numChannels]atomic.Uint64

	mu        sync.Mutex
	peers     map[peerKey]*replayState
	lastSweep time.Time
}

type peerKey struct {
	node        string
	incarnation uint64
}

type replayState struct {
	seen time.Time
	win  [numChannels]replayWindow
}

// clusterKey derives the key of cluster from secret.
func clusterKey(secret []byte, cluster string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("flux bus v1 cluster key\x00" + cluster))
	return m.Sum(nil)
}

func newAuthenticator(self, cluster string, secret []byte, maxSkew time.Duration, now func() time.Time) *authenticator {
	key := clusterKey(secret, cluster)
	var r [8]byte
	_, _ = rand.Read(r[:])
	a := &authenticator{
		self: self, incarnation: binary.LittleEndian.Uint64(r[:]) | 1,
		maxSkew: maxSkew, now: now,
		peers: make(map[peerKey]*replayState),
	}
	a.macs.New = func() any { return hmac.New(sha256.New, key) }
	return a
}

// begin appends an envelope's header for a message of kind to dst and
// returns it with the message's seq; the caller appends the message, then
// calls seal with the offset where the envelope began.
func (a *authenticator) begin(dst []byte, kind byte, to string, re uint64) ([]byte, uint64) {
	seq := a.seq[channelOf(kind)].Add(1)
	dst = append(dst, kindEnvelope, Version)
	dst = appendString(dst, a.self)
	dst = appendString(dst, to)
	dst = binary.AppendUvarint(dst, a.incarnation)
	dst = binary.AppendVarint(dst, a.now().UnixNano())
	dst = binary.AppendUvarint(dst, seq)
	dst = binary.AppendUvarint(dst, re)
	return dst, seq
}

// seal appends the MAC of dst[start:].
func (a *authenticator) seal(dst []byte, start int) []byte {
	m := a.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(dst[start:])
	dst = m.Sum(dst)
	a.macs.Put(m)
	return dst
}

// envelope is a verified envelope's header and the message it carries.
type envelope struct {
	from, to    string
	incarnation uint64
	at          int64
	seq, re     uint64
	msg         []byte
}

// maxEnvelopeHeader bounds the bytes an envelope adds to its message;
// NATS.chunkLimit leaves room for it.
const maxEnvelopeHeader = 2 + 2*(binary.MaxVarintLen64+MaxNodeIDLen) + 4*binary.MaxVarintLen64 + macLen

// open verifies data and returns its envelope. to is who the message must
// be addressed to: "" for gossip and heartbeats, this node for requests
// and replies. It checks everything but the sequence number (see fresh).
func (a *authenticator) open(data []byte, to string) (envelope, verdict) {
	if len(data) < 2+macLen || data[0] != kindEnvelope || data[1] != Version {
		return envelope{}, unauthenticated
	}
	body, sum := data[:len(data)-macLen], data[len(data)-macLen:]
	m := a.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(body)
	var buf [macLen]byte
	ok := hmac.Equal(m.Sum(buf[:0]), sum)
	a.macs.Put(m)
	if !ok {
		return envelope{}, unauthenticated
	}
	r := reader{b: body[2:]}
	env := envelope{from: string(r.bytes()), to: string(r.bytes()), incarnation: r.uvarint(), at: r.varint(), seq: r.uvarint(), re: r.uvarint()}
	env.msg = r.b
	if r.err != nil || len(env.msg) == 0 || channelOf(env.msg[0]) < 0 || ValidNodeID(env.from) != nil {
		return envelope{}, malformedEnv
	}
	if env.from == a.self {
		return envelope{}, own
	}
	if env.to != to {
		return envelope{}, replayed // meant for another node, or for everyone
	}
	now := a.now().UnixNano()
	if d := now - env.at; d > int64(a.maxSkew) || d < -int64(a.maxSkew) {
		return envelope{}, replayed // too old to tell from a replay, or from the future
	}
	return env, accepted
}

// fresh records env's sequence number and reports whether it is the first
// time this node sees it. Call it last, once everything else about the
// message is known to be right.
func (a *authenticator) fresh(env *envelope) bool {
	now := a.now()
	k := peerKey{env.from, env.incarnation}
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.peers[k]
	if st == nil {
		a.sweep(now)
		st = &replayState{}
		a.peers[k] = st
	}
	st.seen = now
	return st.win[channelOf(env.msg[0])].accept(env.seq)
}

// sweep forgets the senders not heard from for three skews: whatever they
// sent before is too old to pass open. Called with mu held.
func (a *authenticator) sweep(now time.Time) {
	if now.Sub(a.lastSweep) < a.maxSkew {
		return
	}
	a.lastSweep = now
	for k, st := range a.peers {
		if now.Sub(st.seen) > 3*a.maxSkew {
			delete(a.peers, k)
		}
	}
}

// replayWindow remembers which of the last replayBits sequence numbers
// were seen (a ring indexed by seq modulo replayBits).
type replayWindow struct {
	top  uint64
	bits [replayBits / 64]uint64
}

func (w *replayWindow) accept(seq uint64) bool {
	if seq == 0 {
		return false
	}
	if seq > w.top {
		if seq-w.top >= replayBits {
			w.bits = [replayBits / 64]uint64{}
		} else {
			for s := w.top + 1; s < seq; s++ {
				i := s % replayBits
				w.bits[i/64] &^= 1 << (i % 64)
			}
		}
		w.top = seq
		i := seq % replayBits
		w.bits[i/64] |= 1 << (i % 64)
		return true
	}
	if w.top-seq >= replayBits {
		return false
	}
	i := seq % replayBits
	if w.bits[i/64]&(1<<(i%64)) != 0 {
		return false
	}
	w.bits[i/64] |= 1 << (i % 64)
	return true
}
