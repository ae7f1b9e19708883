package bus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Forwarder defaults.
const (
	// DefaultForwardDelay is how long the first check queued for an owner
	// waits for others to share its request.
	DefaultForwardDelay = 300 * time.Microsecond
	// DefaultForwardBatch is how many checks fill a request, which is
	// then sent at once.
	DefaultForwardBatch = 256
	// DefaultForwardBytes bounds a request's encoded keys; reaching it
	// sends the request at once.
	DefaultForwardBytes = 256 << 10
	// DefaultForwardTimeout is the request deadline when a check does not
	// give its own.
	DefaultForwardTimeout = 250 * time.Millisecond
)

// ForwarderConfig sets up a Forwarder. Zero fields take the defaults.
type ForwarderConfig struct {
	Delay    time.Duration
	MaxBatch int
	MaxBytes int
	Timeout  time.Duration
}

// ForwarderStats are a Forwarder's counters.
type ForwarderStats struct {
	Requests uint64 // requests sent
	Checks   uint64 // checks sent in them
	Failed   uint64 // requests that failed (timeout, no responders, ...)
}

// Forwarder coalesces checks bound for the same owner into one Forward
// request, as gubernator's global.go coalesces hits: the first check queued
// for an owner arms a timer of Delay; the request leaves when it fires or
// as soon as MaxBatch checks (or MaxBytes of keys) are queued, whichever
// comes first. Requests to different owners, and successive requests to
// one owner, are in flight independently.
//
// All methods are safe for simultaneous use. The Forwarder owns the
// goroutines that send requests; Close waits for them.
type Forwarder struct {
	bus Bus
	cfg ForwarderConfig

	ctx    context.Context // cancelled by Close: aborts requests in flight
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	queues map[string]*fwdBatch
	closed bool

	requests, checks, failed atomic.Uint64
}

type fwdBatch struct {
	to      string
	checks  []Check
	calls   []*Call
	bytes   int
	timeout time.Duration
	timer   *time.Timer
}

// Call is a forwarded check in flight.
type Call struct {
	done chan struct{}
	res  Result
	err  error
}

// Wait returns the owner's result once it has answered. err is the
// transport's failure (ErrNoResponders, a deadline, ErrClosed, ...);
// when err is nil, Result.Err may still carry the owner's own error for
// this check. Wait returns ctx's error if ctx ends first. It may be called
// more than once.
func (c *Call) Wait(ctx context.Context) (Result, error) {
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// NewForwarder returns a Forwarder sending over b.
func NewForwarder(b Bus, cfg ForwarderConfig) (*Forwarder, error) {
	if cfg.Delay < 0 || cfg.MaxBatch < 0 || cfg.MaxBytes < 0 || cfg.Timeout < 0 {
		return nil, fmt.Errorf("bus: forwarder: negative setting in %+v", cfg)
	}
	if cfg.Delay == 0 {
		cfg.Delay = DefaultForwardDelay
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultForwardBatch
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultForwardBytes
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultForwardTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Forwarder{bus: b, cfg: cfg, ctx: ctx, cancel: cancel, queues: make(map[string]*fwdBatch)}, nil
}

// Ask forwards c to node and waits for the result (see Call.Wait). The
// request's deadline is timeout, or the Forwarder's Timeout if zero.
func (f *Forwarder) Ask(ctx context.Context, node string, c Check, timeout time.Duration) (Result, error) {
	return f.Enqueue(node, c, timeout).Wait(ctx)
}

// Enqueue queues c for node and returns at once. The request carrying it
// gets the longest timeout of the checks it carries (the Forwarder's
// Timeout for a zero timeout).
func (f *Forwarder) Enqueue(node string, c Check, timeout time.Duration) *Call {
	call := &Call{done: make(chan struct{})}
	if timeout <= 0 {
		timeout = f.cfg.Timeout
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		call.err = ErrClosed
		close(call.done)
		return call
	}
	q := f.queues[node]
	if q == nil {
		q = &fwdBatch{to: node}
		f.queues[node] = q
		f.wg.Add(1) // for the timer's function
		q.timer = time.AfterFunc(f.cfg.Delay, func() { f.expired(q) })
	}
	q.checks = append(q.checks, c)
	q.calls = append(q.calls, call)
	q.bytes += checkSize(&c)
	q.timeout = max(q.timeout, timeout)
	if len(q.checks) >= f.cfg.MaxBatch || q.bytes >= f.cfg.MaxBytes {
		delete(f.queues, node)
		if q.timer.Stop() {
			f.wg.Done()
		}
		f.wg.Go(func() { f.send(q) })
	}
	f.mu.Unlock()
	return call
}

// expired runs when a batch's delay is over.
func (f *Forwarder) expired(q *fwdBatch) {
	defer f.wg.Done()
	f.mu.Lock()
	mine := f.queues[q.to] == q
	if mine {
		delete(f.queues, q.to)
	}
	f.mu.Unlock()
	if mine {
		f.send(q)
	}
}

func (f *Forwarder) send(q *fwdBatch) {
	ctx, cancel := context.WithTimeout(f.ctx, q.timeout)
	defer cancel()
	f.requests.Add(1)
	f.checks.Add(uint64(len(q.checks)))
	rs, err := f.bus.Forward(ctx, q.to, q.checks)
	if err == nil && len(rs) != len(q.checks) {
		err = errorf(ErrMalformed, "%d results for %d checks", len(rs), len(q.checks))
	}
	if err != nil {
		f.failed.Add(1)
		err = fmt.Errorf("forward to %s: %w", q.to, err)
	}
	for i, c := range q.calls {
		if err != nil {
			c.err = err
		} else {
			c.res = rs[i]
		}
		close(c.done)
	}
}

// Stats returns the Forwarder's counters.
func (f *Forwarder) Stats() ForwarderStats {
	return ForwarderStats{Requests: f.requests.Load(), Checks: f.checks.Load(), Failed: f.failed.Load()}
}

// Close fails the checks still queued with ErrClosed, aborts the requests
// in flight and waits for their goroutines. It is idempotent.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		f.wg.Wait()
		return nil
	}
	f.closed = true
	for node, q := range f.queues {
		delete(f.queues, node)
		if q.timer.Stop() {
			f.wg.Done()
		}
		for _, c := range q.calls {
			c.err = ErrClosed
			close(c.done)
		}
	}
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	return nil
}
