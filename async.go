package flux

import (
	"context"
	"slices"
	"time"

	"github.com/fluxlimiter/flux/internal/errs"
	"github.com/fluxlimiter/flux/shard"
)

// Future is a check in flight. CheckAsync returns one at once, so a single
// goroutine can keep many checks outstanding and collect them with Wait.
// No goroutine backs a Future: the shard answers on a buffered channel.
//
// Wait may be called more than once (it returns the same result); it must
// not be called by several goroutines at the same time.
type Future struct {
	reply  chan shard.Reply
	closed <-chan struct{}
	done   bool
	d      Decision
	err    error
	hook   *asyncHook // after hooks still to run (hooks.go)
}

// CheckAsync sends a check of cost 1 for key and returns its Future.
// Errors found before sending (invalid key, closed limiter, overload) are
// returned by the Future's Wait.
func (l *Limiter) CheckAsync(ctx context.Context, key string) *Future {
	return l.CheckNAsync(ctx, key, 1)
}

// CheckNAsync is CheckAsync for a request of cost n.
func (l *Limiter) CheckNAsync(ctx context.Context, key string, n int) *Future {
	if l.ext != nil && l.ext.hooked {
		h := l.ext.startAsync(ctx, key, n)
		f := l.checkNAsync(ctx, key, n)
		f.hook = h
		return f
	}
	return l.checkNAsync(ctx, key, n)
}

func (l *Limiter) checkNAsync(ctx context.Context, key string, n int) *Future {
	if l.closed.Load() {
		return &Future{done: true, err: ErrClosed}
	}
	if err := l.validate(key, n); err != nil {
		return &Future{done: true, err: err}
	}
	rc, closed, err := l.eng.checkAsync(ctx, key, int64(n))
	if err != nil {
		return &Future{done: true, err: err}
	}
	return &Future{reply: rc, closed: closed}
}

// Wait returns the check's decision once the shard has answered, or an
// error if ctx ends first (the check may still be applied in that case).
func (f *Future) Wait(ctx context.Context) (Decision, error) {
	d, err := f.wait(ctx)
	if f.hook != nil { // hooks run once, in the first Wait that returns
		h := f.hook
		f.hook = nil
		h.done(d, err)
	}
	return d, err
}

func (f *Future) wait(ctx context.Context) (Decision, error) {
	if f.done {
		return f.d, f.err
	}
	select {
	case r := <-f.reply:
		f.set(Decision(r.D), r.Err)
	case <-ctx.Done():
		return Decision{}, ctx.Err()
	case <-f.closed:
		select {
		case r := <-f.reply:
			f.set(Decision(r.D), r.Err)
		default:
			f.set(Decision{}, errs.Closed)
		}
	}
	return f.d, f.err
}

func (f *Future) set(d Decision, err error) { f.d, f.err, f.done = d, err, true }

// Ready reports whether Wait would return without blocking.
func (f *Future) Ready() bool {
	if f.done {
		return true
	}
	select {
	case r := <-f.reply:
		f.set(Decision(r.D), r.Err)
		return true
	default:
		return false
	}
}

// BatchFuture is a CheckBatch in flight: its parts are queued at the shards
// and Wait collects them. Like Future it is backed by no goroutine, and Wait
// must not be called by several goroutines at once.
type BatchFuture struct {
	l    *Limiter
	p    *pending
	out  []Decision
	done bool
	err  error
	hook *asyncBatchHook // after hooks still to run (hooks.go)
}

// CheckBatchAsync validates reqs (as CheckBatch does), sends them to the
// shards and returns at once. The limiter copies reqs, so the caller may
// reuse the slice immediately.
func (l *Limiter) CheckBatchAsync(ctx context.Context, reqs []Request) *BatchFuture {
	if l.ext != nil && l.ext.hooked {
		reqs = slices.Clone(reqs) // the hooks keep them until Wait
		h := l.ext.startAsyncBatch(ctx, reqs)
		f := l.checkBatchAsync(ctx, reqs)
		f.hook = h
		return f
	}
	return l.checkBatchAsync(ctx, reqs)
}

func (l *Limiter) checkBatchAsync(ctx context.Context, reqs []Request) *BatchFuture {
	f := &BatchFuture{l: l}
	if l.closed.Load() {
		f.done, f.err = true, ErrClosed
		return f
	}
	for i := range reqs {
		if err := l.validateRequest(&reqs[i]); err != nil {
			f.done, f.err = true, &BatchError{Index: i, Err: err}
			return f
		}
	}
	f.out = make([]Decision, len(reqs))
	if len(reqs) == 0 {
		f.done = true
		return f
	}
	p, err := l.eng.start(ctx, slices.Clone(reqs), f.out, true)
	if err != nil {
		f.done, f.err = true, err
		return f
	}
	f.p = p
	return f
}

// Wait returns the decisions, in the order of the requests, once every
// shard has answered, or an error if ctx ends first (the batch is then
// abandoned, and later calls return the same error).
func (f *BatchFuture) Wait(ctx context.Context) ([]Decision, error) {
	out, err := f.wait(ctx)
	if f.hook != nil { // hooks run once, in the first Wait that returns
		h := f.hook
		f.hook = nil
		h.done(out, err)
	}
	return out, err
}

func (f *BatchFuture) wait(ctx context.Context) ([]Decision, error) {
	if !f.done {
		// If ctx ends first the batch is abandoned and this Wait's error
		// stays the future's result.
		f.done, f.err = true, f.l.eng.finish(ctx, f.p, f.out, nil)
		f.p = nil
	}
	if f.err != nil {
		return nil, f.err
	}
	return f.out, nil
}

// CountFuture is a Cleanup in flight.
type CountFuture struct {
	done chan struct{}
	n    int
	err  error
}

// CleanupAsync runs Cleanup in the background and returns at once. The
// limiter owns the goroutine: Close waits for it.
func (l *Limiter) CleanupAsync(ctx context.Context, staleAfter time.Duration) *CountFuture {
	f := &CountFuture{done: make(chan struct{})}
	l.asyncMu.Lock()
	defer l.asyncMu.Unlock()
	if l.closed.Load() {
		f.err = ErrClosed
		close(f.done)
		return f
	}
	l.async.Go(func() {
		defer close(f.done)
		f.n, f.err = l.Cleanup(ctx, staleAfter)
	})
	return f
}

// Wait returns the number of keys removed once the cleanup is over, or an
// error if ctx ends first (the cleanup goes on). Safe for simultaneous use.
func (f *CountFuture) Wait(ctx context.Context) (int, error) {
	select {
	case <-f.done:
		return f.n, f.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
