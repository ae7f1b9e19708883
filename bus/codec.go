package bus

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	flux "github.com/fluxlimiter/flux"
)

// The wire format (version 1) is documented in docs/CLUSTER.md. Every
// message starts with a kind byte and a version byte; integers are
// varints (encoding/binary's Uvarint, or zig-zag Varint for signed values);
// strings and byte strings are a uvarint length followed by the bytes.

// Version is the version byte of every message this package writes.
// Decoders reject other versions.
const Version = 1

// Message kinds: the first byte of every message.
const (
	kindUpdates      = 'U'
	kindHeartbeat    = 'H'
	kindForward      = 'F'
	kindForwardReply = 'R'
	kindSync         = 'S'
	kindSyncReply    = 'Y'
)

// Error codes carried by forward and sync replies.
const (
	codeNone byte = iota
	codeRemote
	codeUnknownLimiter
	codeInvalidCost
	codeCostExceedsBurst
	codeEmptyKey
	codeKeyTooLong
	codeFull
	codeOverloaded
	codeClosed
	codeClock
	codePanic
	codeInvalidState
)

var codeErrs = [...]error{
	codeRemote:           ErrRemote,
	codeUnknownLimiter:   ErrUnknownLimiter,
	codeInvalidCost:      flux.ErrInvalidCost,
	codeCostExceedsBurst: flux.ErrCostExceedsCapacity,
	codeEmptyKey:         flux.ErrEmptyKey,
	codeKeyTooLong:       flux.ErrKeyTooLong,
	codeFull:             flux.ErrFull,
	codeOverloaded:       flux.ErrOverloaded,
	codeClosed:           flux.ErrClosed,
	codeClock:            flux.ErrClock,
	codePanic:            flux.ErrPanic,
	codeInvalidState:     flux.ErrInvalidState,
}

func codeOf(err error) byte {
	for c := codeUnknownLimiter; int(c) < len(codeErrs); c++ {
		if errors.Is(err, codeErrs[c]) {
			return c
		}
	}
	return codeRemote
}

// remoteError is an error reported by another node: its text, wrapping
// the sentinel its code names, so errors.Is works across the wire.
type remoteError struct {
	msg string
	err error
}

func (e *remoteError) Error() string { return "remote: " + e.msg }
func (e *remoteError) Unwrap() error { return e.err }

func errorFromWire(code byte, msg string) error {
	sentinel := ErrRemote
	if int(code) < len(codeErrs) && codeErrs[code] != nil {
		sentinel = codeErrs[code]
	}
	return &remoteError{msg: msg, err: sentinel}
}

func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}

// maxErrText bounds the error text carried in a reply.
const maxErrText = 256

// NewNodeID returns a random node id of 16 characters from [a-z0-9].
func NewNodeID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// ---- encoding ----

func appendHeader(dst []byte, kind byte) []byte { return append(dst, kind, Version) }

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst []byte, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendNonNeg(dst []byte, v int64) []byte { return binary.AppendUvarint(dst, uint64(max(v, 0))) }

// updateSize is an upper bound of one update's encoded size.
func updateSize(u *flux.Update) int { return len(u.Key) + 3*binary.MaxVarintLen64 }

// appendUpdates encodes u. Origin times are delta-coded from the previous
// item (the first from zero), so a batch of nearby times costs a few bytes
// per item.
func appendUpdates(dst []byte, u *Updates) []byte {
	dst = appendHeader(dst, kindUpdates)
	dst = appendString(dst, u.Limiter)
	dst = binary.AppendUvarint(dst, uint64(len(u.Items)))
	var prev int64
	for i := range u.Items {
		it := &u.Items[i]
		dst = appendString(dst, it.Key)
		dst = binary.AppendVarint(dst, it.At-prev)
		prev = it.At
		dst = appendNonNeg(dst, int64(it.Cost))
	}
	return dst
}

func appendHeartbeat(dst []byte, hb *Heartbeat) []byte {
	dst = appendHeader(dst, kindHeartbeat)
	dst = appendString(dst, hb.Node)
	dst = append(dst, byte(hb.State))
	dst = binary.BigEndian.AppendUint64(dst, hb.Fingerprint)
	return appendNonNeg(dst, int64(hb.Interval))
}

// appendForward encodes checks; limiter names are listed once and items
// refer to them by index.
func appendForward(dst []byte, checks []Check) []byte {
	dst = appendHeader(dst, kindForward)
	var names []string
	idx := make(map[string]int, 2)
	for i := range checks {
		if _, ok := idx[checks[i].Limiter]; !ok {
			idx[checks[i].Limiter] = len(names)
			names = append(names, checks[i].Limiter)
		}
	}
	dst = binary.AppendUvarint(dst, uint64(len(names)))
	for _, n := range names {
		dst = appendString(dst, n)
	}
	dst = binary.AppendUvarint(dst, uint64(len(checks)))
	for i := range checks {
		c := &checks[i]
		dst = binary.AppendUvarint(dst, uint64(idx[c.Limiter]))
		dst = appendString(dst, c.Key)
		dst = appendNonNeg(dst, int64(c.Cost))
	}
	return dst
}

// checkSize is an upper bound of one check's encoded size, limiter name
// excluded.
func checkSize(c *Check) int { return len(c.Key) + 3*binary.MaxVarintLen64 }

const (
	flagAllowed = 1 << 0
	flagError   = 1 << 1
	flagLast    = 1 << 2
)

func appendError(dst []byte, err error) []byte {
	msg := err.Error()
	if len(msg) > maxErrText {
		msg = msg[:maxErrText]
	}
	dst = append(dst, codeOf(err))
	return appendString(dst, msg)
}

func appendForwardReply(dst []byte, rs []Result) []byte {
	dst = appendHeader(dst, kindForwardReply)
	dst = binary.AppendUvarint(dst, uint64(len(rs)))
	for i := range rs {
		r := &rs[i]
		if r.Err != nil {
			dst = append(dst, flagError)
			dst = appendError(dst, r.Err)
			continue
		}
		d := &r.Decision
		var f byte
		if d.Allowed {
			f |= flagAllowed
		}
		dst = append(dst, f)
		dst = appendNonNeg(dst, int64(d.Limit))
		dst = appendNonNeg(dst, int64(d.Remaining))
		dst = appendNonNeg(dst, int64(d.RetryAfter))
		dst = appendNonNeg(dst, int64(d.ResetAfter))
		dst = appendNonNeg(dst, int64(d.Delay))
	}
	return dst
}

func appendSync(dst []byte, limiter string) []byte {
	dst = appendHeader(dst, kindSync)
	return appendString(dst, limiter)
}

// appendSyncReply encodes one chunk of a snapshot; last marks the final
// chunk. A non-nil err is sent instead of states (and is always last).
func appendSyncReply(dst []byte, states []flux.KeyState, last bool, err error) []byte {
	dst = appendHeader(dst, kindSyncReply)
	switch {
	case err != nil:
		dst = append(dst, flagError|flagLast)
		return appendError(dst, err)
	case last:
		dst = append(dst, flagLast)
	default:
		dst = append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(states)))
	for i := range states {
		dst = appendString(dst, states[i].Key)
		dst = appendBytes(dst, states[i].State)
	}
	return dst
}

func stateSize(s *flux.KeyState) int { return len(s.Key) + len(s.State) + 2*binary.MaxVarintLen64 }

// ---- decoding ----

// reader decodes a message; the first failure sticks and later reads
// return zero values, so decoders check r.err once at the end.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = errorf(ErrMalformed, format, args...)
	}
}

func (r *reader) header(kind byte) {
	if len(r.b) < 2 {
		r.fail("%d bytes", len(r.b))
		return
	}
	if r.b[0] != kind {
		r.fail("kind %q, want %q", r.b[0], kind)
	} else if r.b[1] != Version {
		r.fail("version %d, want %d", r.b[1], Version)
	}
	r.b = r.b[2:]
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// nonNeg reads a uvarint that must fit in a non-negative int64.
func (r *reader) nonNeg() int64 {
	v := r.uvarint()
	if v > 1<<63-1 {
		r.fail("value %d out of range", v)
		return 0
	}
	return int64(v)
}

// count reads an item count; each item takes at least minSize bytes, which
// bounds the allocation a hostile count can cause.
func (r *reader) count(minSize int) int {
	v := r.uvarint()
	if r.err == nil && v > uint64(len(r.b)/minSize) {
		r.fail("count %d exceeds the %d bytes left", v, len(r.b))
		return 0
	}
	return int(v)
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("length %d exceeds the %d bytes left", n, len(r.b))
		return nil
	}
	b := r.b[:n:n]
	r.b = r.b[n:]
	return b
}

func (r *reader) string() string { return string(r.bytes()) }

func (r *reader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}

func (r *reader) error() error {
	code := r.byte()
	msg := r.string()
	return errorFromWire(code, msg)
}

func decodeUpdates(b []byte) (Updates, error) {
	r := reader{b: b}
	r.header(kindUpdates)
	u := Updates{Limiter: r.string()}
	n := r.count(3)
	if n > 0 {
		u.Items = make([]flux.Update, n)
	}
	var at int64
	for i := 0; i < n && r.err == nil; i++ {
		it := &u.Items[i]
		it.Key = r.string()
		at += r.varint()
		it.At = at
		c := r.nonNeg()
		if c > 1<<31-1 {
			r.fail("cost %d out of range", c)
		}
		it.Cost = int(c)
	}
	return u, r.end()
}

func decodeHeartbeat(b []byte) (Heartbeat, error) {
	r := reader{b: b}
	r.header(kindHeartbeat)
	hb := Heartbeat{Node: r.string(), State: NodeState(r.byte())}
	if r.err == nil && len(r.b) < 8 {
		r.fail("truncated fingerprint")
	}
	if r.err == nil {
		hb.Fingerprint = binary.BigEndian.Uint64(r.b)
		r.b = r.b[8:]
	}
	hb.Interval = time.Duration(r.nonNeg())
	if err := r.end(); err != nil {
		return Heartbeat{}, err
	}
	if hb.State > Leaving {
		return Heartbeat{}, errorf(ErrMalformed, "node state %d", hb.State)
	}
	if err := ValidNodeID(hb.Node); err != nil {
		return Heartbeat{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return hb, nil
}

func decodeForward(b []byte) ([]Check, error) {
	r := reader{b: b}
	r.header(kindForward)
	names := make([]string, r.count(1))
	for i := range names {
		names[i] = r.string()
	}
	n := r.count(3)
	checks := make([]Check, n)
	for i := 0; i < n && r.err == nil; i++ {
		li := r.uvarint()
		if r.err == nil && li >= uint64(len(names)) {
			r.fail("limiter index %d of %d", li, len(names))
		}
		if r.err != nil {
			break
		}
		c := &checks[i]
		c.Limiter = names[li]
		c.Key = r.string()
		cost := r.nonNeg()
		if cost > 1<<31-1 {
			r.fail("cost %d out of range", cost)
		}
		c.Cost = int(cost)
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return checks, nil
}

func decodeForwardReply(b []byte) ([]Result, error) {
	r := reader{b: b}
	r.header(kindForwardReply)
	n := r.count(2)
	rs := make([]Result, n)
	for i := 0; i < n && r.err == nil; i++ {
		f := r.byte()
		if f&flagError != 0 {
			rs[i].Err = r.error()
			continue
		}
		d := &rs[i].Decision
		d.Allowed = f&flagAllowed != 0
		d.Limit = int(r.nonNeg())
		d.Remaining = int(r.nonNeg())
		d.RetryAfter = time.Duration(r.nonNeg())
		d.ResetAfter = time.Duration(r.nonNeg())
		d.Delay = time.Duration(r.nonNeg())
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return rs, nil
}

func decodeSync(b []byte) (string, error) {
	r := reader{b: b}
	r.header(kindSync)
	name := r.string()
	return name, r.end()
}

// decodeSyncReply decodes one chunk; a remote failure comes back as err
// wrapping its sentinel, with last true.
func decodeSyncReply(b []byte) (states []flux.KeyState, last bool, remote, err error) {
	r := reader{b: b}
	r.header(kindSyncReply)
	f := r.byte()
	last = f&flagLast != 0
	if f&flagError != 0 {
		remote = r.error()
		if err := r.end(); err != nil {
			return nil, false, nil, err
		}
		return nil, true, remote, nil
	}
	n := r.count(2)
	states = make([]flux.KeyState, n)
	for i := 0; i < n && r.err == nil; i++ {
		states[i].Key = r.string()
		states[i].State = append([]byte(nil), r.bytes()...)
	}
	if err := r.end(); err != nil {
		return nil, false, nil, err
	}
	return states, last, nil, nil
}
