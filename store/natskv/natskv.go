// Package natskv is a store.Store on a NATS JetStream key-value bucket
// (github.com/nats-io/nats.go/jetstream): by default the JetStream of the
// NATS server flux-node embeds, so persistence needs nothing else running.
//
// # Keys and values
//
// One bucket (Options.Bucket, "flux" by default) holds every limiter. A
// state is the KV key
//
//	s.<limiter>.<key>      value: IdleAt (8 bytes, big-endian) ‖ state
//
// and an atomic GCRA record the key g.<limiter>.<key> with the same value
// layout (the state being algorithm.GCRA's 8-byte TAT). KV keys are limited
// to [-/_=.a-zA-Z0-9] with '.' separating tokens, so limiter and key are
// each written as unpadded URL-safe base64 ([-_a-zA-Z0-9], never a '.'),
// which is reversible and collision-free; a key whose encoding would exceed
// 1000 bytes is written as '=' followed by the base64 of its SHA-256 ('='
// never occurs in the plain encoding).
//
// # Expiry
//
// A KV bucket's TTL (the stream's MaxAge) is one age for every key, and the
// per-key TTL of kv.Create is dropped by kv.Update. Neither fits: a monthly
// window must outlive a per-second limit's entries by months. This package
// therefore creates the bucket with LimitMarkerTTL, which enables per-message
// TTLs on the stream (AllowMsgTTL, nats-server 2.11 or later), and writes
// every value itself with a Nats-TTL header: the time until its state
// equals a fresh key plus Options.Margin, rounded up to whole seconds (the
// header's resolution; at least 1 s), or "never" for store.NoExpiry. Since
// every write carries its own TTL, no update drops it. History is 1, so a
// write replaces the key's previous value. When a value expires, the server
// leaves a delete marker that itself expires after Options.MarkerTTL.
// Options.MaxAge optionally sets a bucket-wide upper bound on top.
//
// # Compare-and-set
//
// Update (store.Updater) reads a key's last message and writes with
// Nats-Expected-Last-Subject-Sequence set to its sequence (the KV revision;
// 0 for a key that never existed), retrying when another writer got there
// first. CheckGCRA (store.AtomicGCRA) is algorithm.GCRA.Step run through
// Update: exact, at the price of two round trips per check and retries
// under contention. Every algorithm can use Update the same way. There is
// no server-clock mode: NATS cannot compute.
package natskv

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/internal/errs"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/internal/gcrastep"
	"github.com/fluxlimiter/flux/store/internal/names"
)

// DefaultBucket is the KV bucket the store uses unless Options.Bucket says
// otherwise.
const DefaultBucket = "flux"

// DefaultMarkerTTL is how long delete markers live unless
// Options.MarkerTTL says otherwise.
const DefaultMarkerTTL = time.Minute

// maxInFlight bounds the asynchronous publishes or concurrent reads one
// call keeps outstanding.
const maxInFlight = 256

// maxKeyToken bounds an encoded key's length before it is hashed instead.
const maxKeyToken = 1000

// Options configure a Store. The zero value is usable.
type Options struct {
	// Bucket is the KV bucket's name (DefaultBucket if empty). Stores on
	// different buckets never see each other's data.
	Bucket string
	// Replicas is the bucket's replication factor (1 if zero).
	Replicas int
	// Storage is file (default) or memory storage.
	Storage jetstream.StorageType
	// MaxAge, if positive, is a bucket-wide upper bound on every value's
	// age, on top of the per-key TTLs; NoExpiry values ignore it.
	MaxAge time.Duration
	// MarkerTTL is how long the markers of deleted or expired keys live
	// (DefaultMarkerTTL if zero; at least one second).
	MarkerTTL time.Duration
	// Clock is the time TTLs are computed from (clock.NewSystem() if nil).
	// Pass the limiter's clock.
	Clock clock.Clock
	// Margin is added to every TTL (store.DefaultMargin if zero, none if
	// negative; TTLs are at least one second regardless).
	Margin time.Duration
}

// Store is a JetStream KV store. It is safe for simultaneous use.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	nc     *nats.Conn // closed by Close when Open made it
	pre    string     // "$KV.<bucket>."
	clk    clock.Clock
	margin time.Duration
	marker string // Nats-TTL of purge markers
	closed atomic.Bool
}

var (
	_ store.Store       = (*Store)(nil)
	_ store.BatchLoader = (*Store)(nil)
	_ store.Updater     = (*Store)(nil)
	_ store.AtomicGCRA  = (*Store)(nil)
	_ store.Pinger      = (*Store)(nil)
)

// storeCreateFailed reports JetStream's transient "error creating store for
// stream" (API error code 10049).
func storeCreateFailed(err error) bool {
	var je jetstream.JetStreamError
	if !errors.As(err, &je) || je.APIError() == nil {
		return false
	}
	return je.APIError().ErrorCode == 10049
}

// New creates the bucket (or updates its configuration) on js and returns
// a Store over it. The caller keeps ownership of js and its connection.
// The server must run nats-server 2.11 or later (per-message TTLs).
//
// Unless the connection was made with nats.ReconnectBufSize(-1), nats.go
// buffers what is published while it reconnects and sends it once it is
// back: a Save that failed on its deadline during an outage may then still
// be applied (before anything saved after the outage, so it never
// overwrites a newer state of a key).
func New(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	if opts.Bucket == "" {
		opts.Bucket = DefaultBucket
	}
	if opts.Clock == nil {
		opts.Clock = clock.NewSystem()
	}
	opts.Margin = store.Margin(opts.Margin)
	if opts.MarkerTTL == 0 {
		opts.MarkerTTL = DefaultMarkerTTL
	}
	opts.MarkerTTL = min(max(opts.MarkerTTL, time.Second), store.MaxTTL)
	cfg := jetstream.KeyValueConfig{
		Bucket:         opts.Bucket,
		Description:    "Flux rate-limiter states (store/natskv)",
		History:        1,
		TTL:            opts.MaxAge,
		Storage:        opts.Storage,
		Replicas:       opts.Replicas,
		LimitMarkerTTL: opts.MarkerTTL,
	}
	_, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	// A loaded server sometimes answers "error creating store for stream"
	// (JetStream API error 10049) and succeeds when asked again: retry
	// that one error a few times, within ctx.
	for attempt := 0; attempt < 4 && storeCreateFailed(err); attempt++ {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("natskv: bucket %q: %w", opts.Bucket, ctx.Err())
		case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
		}
		_, err = js.CreateOrUpdateKeyValue(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("natskv: bucket %q: %w", opts.Bucket, err)
	}
	st, err := js.Stream(ctx, "KV_"+opts.Bucket)
	if err != nil {
		return nil, fmt.Errorf("natskv: bucket %q: %w", opts.Bucket, err)
	}
	return &Store{
		js:     js,
		stream: st,
		pre:    "$KV." + opts.Bucket + ".",
		clk:    opts.Clock,
		margin: opts.Margin,
		marker: ttlHeader(opts.MarkerTTL),
	}, nil
}

// Open connects to the NATS server at url, and returns a Store that owns
// the connection (Close closes it). nopts are passed to nats.Connect after
// Open's own nats.ReconnectBufSize(-1): while the connection is
// reconnecting, writes fail at once instead of being buffered and sent
// when it comes back, so a Save that reported an error does not land
// later.
func Open(ctx context.Context, url string, opts Options, nopts ...nats.Option) (*Store, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.ReconnectBufSize(-1)}, nopts...)...)
	if err != nil {
		return nil, fmt.Errorf("natskv: connect to %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natskv: %w", err)
	}
	s, err := New(ctx, js, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	s.nc = nc
	return s, nil
}

// Ping implements store.Pinger: it reports whether JetStream answers for
// the bucket's stream.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	_, err := s.stream.Info(ctx)
	return wrap("ping", err)
}

// Close implements store.Store. It closes the connection only if Open made
// it.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.nc != nil {
		s.nc.Close()
	}
	return nil
}

var b64 = base64.RawURLEncoding

// token encodes a name as one KV key token.
func token(name string) string {
	if b64.EncodedLen(len(name)) <= maxKeyToken {
		return b64.EncodeToString([]byte(name))
	}
	h := sha256.Sum256([]byte(name))
	return "=" + b64.EncodeToString(h[:])
}

// subjects returns a function mapping keys of limiter to their subjects.
func (s *Store) subjects(kind, limiter string) func(key string) string {
	pre := s.pre + kind + "." + token(limiter) + "."
	return func(key string) string { return pre + token(key) }
}

func (s *Store) check(limiter string, keys ...string) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return names.Check(limiter, keys...)
}

func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, nats.ErrConnectionClosed):
		return fmt.Errorf("natskv: %s: %w (%w)", op, store.ErrClosed, err)
	}
	return fmt.Errorf("natskv: %s: %w", op, err)
}

// ttlHeader formats a Nats-TTL value: whole seconds, rounded up, ≥ 1 s
// (d ≤ store.MaxTTL, so nothing overflows).
func ttlHeader(d time.Duration) string {
	return strconv.FormatInt(max(int64((d+time.Second-1)/time.Second), 1), 10) + "s"
}

func encode(e store.Entry) []byte {
	v := make([]byte, 8, 8+len(e.State))
	binary.BigEndian.PutUint64(v, uint64(e.IdleAt))
	return append(v, e.State...)
}

// msg builds the message that writes e at subj at now.
func (s *Store) msg(subj string, e store.Entry, now int64) *nats.Msg {
	m := &nats.Msg{Subject: subj, Header: nats.Header{}, Data: encode(e)}
	if d, ok := store.TTL(e.IdleAt, now, s.margin); ok {
		m.Header.Set(jetstream.MsgTTLHeader, ttlHeader(d))
	} else {
		m.Header.Set(jetstream.MsgTTLHeader, "never")
	}
	return m
}

// get reads the last message of subj: the entry if the key holds a value,
// and the subject's last sequence (the KV revision, markers included; 0 if
// the subject has no message), which a compare-and-set expects.
func (s *Store) get(ctx context.Context, subj, key string) (e store.Entry, found bool, rev uint64, err error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return store.Entry{}, false, 0, nil
	}
	if err != nil {
		return store.Entry{}, false, 0, err
	}
	if m.Header.Get("KV-Operation") != "" || m.Header.Get(jetstream.MarkerReasonHeader) != "" {
		return store.Entry{}, false, m.Sequence, nil // deleted, purged or expired
	}
	if len(m.Data) < 8 {
		return store.Entry{}, false, 0, fmt.Errorf("%w: natskv: value of %d bytes", errs.InvalidState, len(m.Data))
	}
	return store.Entry{Key: key, State: m.Data[8:], IdleAt: int64(binary.BigEndian.Uint64(m.Data))}, true, m.Sequence, nil
}

// Load implements store.Store.
func (s *Store) Load(ctx context.Context, limiter, key string) (store.Entry, bool, error) {
	if err := s.check(limiter, key); err != nil {
		return store.Entry{}, false, err
	}
	e, found, _, err := s.get(ctx, s.subjects("s", limiter)(key), key)
	if err != nil {
		return store.Entry{}, false, wrap("load", err)
	}
	return e, found, nil
}

// LoadMany implements store.BatchLoader with concurrent direct gets.
func (s *Store) LoadMany(ctx context.Context, limiter string, keys []string, out []store.Entry, found []bool) error {
	if len(out) < len(keys) || len(found) < len(keys) {
		return fmt.Errorf("natskv: LoadMany: %d keys, room for %d entries and %d flags", len(keys), len(out), len(found))
	}
	if err := s.check(limiter, keys...); err != nil {
		return err
	}
	subj := s.subjects("s", limiter)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(maxInFlight)
	for i, k := range keys {
		g.Go(func() error {
			e, ok, _, err := s.get(gctx, subj(k), k)
			out[i], found[i] = e, ok
			return err
		})
	}
	return wrap("load", g.Wait())
}

// Save implements store.Store: asynchronous publishes, each with its own
// TTL, waiting for every acknowledgement.
func (s *Store) Save(ctx context.Context, limiter string, entries []store.Entry) error {
	if err := s.check(limiter); err != nil {
		return err
	}
	if err := names.EntryKeys(entries); err != nil {
		return err
	}
	now, err := s.clk.Now()
	if err != nil {
		return fmt.Errorf("natskv: clock: %w", err)
	}
	subj := s.subjects("s", limiter)
	msgs := make([]*nats.Msg, len(entries))
	for i, e := range entries {
		msgs[i] = s.msg(subj(e.Key), e, now)
	}
	return wrap("save", s.publish(ctx, msgs))
}

// Delete implements store.Store: one purge marker per key (which drops the
// key's value and itself expires after MarkerTTL).
func (s *Store) Delete(ctx context.Context, limiter string, keys []string) error {
	if err := s.check(limiter, keys...); err != nil {
		return err
	}
	subj := s.subjects("s", limiter)
	msgs := make([]*nats.Msg, len(keys))
	for i, k := range keys {
		m := &nats.Msg{Subject: subj(k), Header: nats.Header{}}
		m.Header.Set("KV-Operation", "PURGE")
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		m.Header.Set(jetstream.MsgTTLHeader, s.marker)
		msgs[i] = m
	}
	return wrap("delete", s.publish(ctx, msgs))
}

// publish sends msgs in order, at most maxInFlight unacknowledged at once,
// and waits for their acknowledgements. Messages to one subject are stored
// in the order sent, so the last write of a key wins.
func (s *Store) publish(ctx context.Context, msgs []*nats.Msg) error {
	futs := make([]jetstream.PubAckFuture, 0, min(len(msgs), maxInFlight))
	wait := func() error {
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futs = futs[:0]
		return nil
	}
	for _, m := range msgs {
		if len(futs) == maxInFlight {
			if err := wait(); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := s.js.PublishMsgAsync(m)
		if err != nil {
			return err
		}
		futs = append(futs, f)
	}
	return wait()
}

// conflict reports whether a write lost a compare-and-set.
func conflict(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && (ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Update implements store.Updater by compare-and-set on the key's revision.
func (s *Store) Update(ctx context.Context, limiter, key string, fn store.UpdateFunc) error {
	if err := s.check(limiter, key); err != nil {
		return err
	}
	return wrap("update", s.update(ctx, s.subjects("s", limiter)(key), key, fn))
}

func (s *Store) update(ctx context.Context, subj, key string, fn store.UpdateFunc) error {
	for {
		cur, found, rev, err := s.get(ctx, subj, key)
		if err != nil {
			return err
		}
		if !found {
			cur = store.Entry{Key: key}
		}
		next, write := fn(cur, found)
		if !write {
			return nil
		}
		now, err := s.clk.Now()
		if err != nil {
			return fmt.Errorf("clock: %w", err)
		}
		_, err = s.js.PublishMsg(ctx, s.msg(subj, next, now), jetstream.WithExpectLastSequencePerSubject(rev))
		if !conflict(err) {
			return err
		}
	}
}

// CheckGCRA implements store.AtomicGCRA: algorithm.GCRA.Step by
// compare-and-set.
func (s *Store) CheckGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error) {
	if _, _, err := gcrastep.Args(g, cost); err != nil {
		return algorithm.Decision{}, err
	}
	if err := s.check(limiter, key); err != nil {
		return algorithm.Decision{}, err
	}
	var (
		d      algorithm.Decision
		badErr error
	)
	err := s.update(ctx, s.subjects("g", limiter)(key), key, func(cur store.Entry, found bool) (store.Entry, bool) {
		tat := g.Fresh(now)
		badErr = nil
		if found {
			var err error
			if tat, err = g.DecodeState(cur.State); err != nil {
				badErr = err
				return store.Entry{}, false
			}
		}
		var changed bool
		tat, d, changed = g.Step(tat, now, cost)
		return store.Entry{State: g.AppendState(nil, tat), IdleAt: g.IdleAt(tat)}, changed
	})
	if err == nil {
		err = badErr
	}
	if err != nil {
		return algorithm.Decision{}, wrap("gcra", err)
	}
	return d, nil
}
