package flux

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Hooks are callbacks run around every check: the original notes' plugins
// (before_check, after_check, on_error). Any field may be nil. Register them
// with WithHooks; a Limiter without hooks or middleware pays one nil check
// per call and nothing else.
//
// Hooks run in the caller's goroutine, never inside a shard, synchronously:
// a slow hook slows the check that runs it. They may be called by many
// goroutines at once, so they must be safe for simultaneous use. A hook
// that panics is contained: the panic is reported to the limiter's logger
// (WithLogger) and the check goes on as if the hook had returned.
//
// The key a hook receives is the caller's key, which may be attacker-chosen
// and up to the limiter's maximum key length (or longer, for a request
// that fails with ErrKeyTooLong): never use it as a metric label.
//
// Which calls run hooks: Check, CheckN, Peek (cost 0), CheckAsync and
// CheckNAsync (BeforeCheck when sent, AfterCheck or OnError in the Wait
// that returns the result, with the latency from send to that Wait), and
// CheckBatch, CheckBatchEach and CheckBatchAsync, which run the hooks once
// per item: every BeforeCheck before the batch is sent, then AfterCheck or
// OnError for each item with the latency of the whole batch. When a batch
// fails as a whole (an invalid item, overload, the context ending), OnError
// runs for every item with the batch's error.
type Hooks struct {
	// BeforeCheck runs before the check is validated and sent.
	BeforeCheck func(ctx context.Context, key string, cost int)
	// AfterCheck runs after a decision, allowed or denied, with the time
	// the check took (see LatencySample).
	AfterCheck func(ctx context.Context, key string, cost int, d Decision, latency time.Duration)
	// OnError runs when a check fails with an error (a denial is not an
	// error), with the time the check took.
	OnError func(ctx context.Context, key string, cost int, err error, latency time.Duration)
	// LatencySample, when n > 1, lets the limiter time only about one
	// check in n, picked at random: AfterCheck and OnError then receive a
	// latency of 0 for the checks that were not timed (a timed check is
	// never 0). Timing costs two monotonic clock reads, about 45 ns on a
	// virtual machine, which is most of what a metrics hook would add to a
	// check. 0 or 1 times every check. When several Hooks are registered
	// the smallest setting applies to all.
	LatencySample int
}

// CheckFunc is one check of cost for key, as CheckN does it. Middleware
// receives the next CheckFunc of the chain and returns a CheckFunc that
// wraps it.
type CheckFunc func(ctx context.Context, key string, cost int) (Decision, error)

// Middleware wraps a check: it may inspect or change the key and cost,
// short-circuit with its own Decision, or look at the result. The
// CheckFunc it returns may be called by many goroutines at once and must be
// safe for simultaneous use.
type Middleware func(next CheckFunc) CheckFunc

// WithHooks adds hooks to the limiter. It may be given more than once; the
// hooks of each kind run in the order they were added. Hooks observe the
// limiter's own checks: they run inside any middleware (WithMiddleware), so
// they see the key and cost the limiter checks, and a middleware that
// answers without calling next runs no hooks.
func WithHooks(h Hooks) Option {
	return func(o *options) {
		if h.BeforeCheck != nil || h.AfterCheck != nil || h.OnError != nil {
			o.hooks = append(o.hooks, h)
		}
	}
}

// WithMiddleware adds a middleware around single checks (Check, CheckN,
// Peek). The first middleware added is the outermost: it sees the call
// first and the result last. Batches and async checks bypass middleware
// (they run hooks only), since a middleware handles one key at a time.
// A nil middleware is ignored. A middleware that panics fails the check
// with an error wrapping ErrPanic instead of crashing the caller.
func WithMiddleware(mw Middleware) Option {
	return func(o *options) {
		if mw != nil {
			o.middleware = append(o.middleware, mw)
		}
	}
}

// extension holds a limiter's hooks and middleware. A Limiter without
// either has a nil *extension, and its checks test that pointer only.
type extension struct {
	l      *Limiter
	before []func(ctx context.Context, key string, cost int)
	after  []func(ctx context.Context, key string, cost int, d Decision, latency time.Duration)
	onErr  []func(ctx context.Context, key string, cost int, err error, latency time.Duration)
	timed  bool         // some AfterCheck or OnError hook is set
	sample uint32       // time one check in sample (0 or 1: every check)
	hooked bool         // some hook is set
	mws    []Middleware // outermost first
	check  CheckFunc    // middleware chain around the hooked core
	logger *slog.Logger
}

// newExtension returns nil when there is nothing to run.
func newExtension(l *Limiter, o *options) *extension {
	if len(o.hooks) == 0 && len(o.middleware) == 0 {
		return nil
	}
	x := &extension{l: l, logger: o.logger}
	for _, h := range o.hooks {
		if h.BeforeCheck != nil {
			x.before = append(x.before, h.BeforeCheck)
		}
		if h.AfterCheck != nil {
			x.after = append(x.after, h.AfterCheck)
		}
		if h.OnError != nil {
			x.onErr = append(x.onErr, h.OnError)
		}
	}
	x.timed = len(x.after) > 0 || len(x.onErr) > 0
	for _, h := range o.hooks {
		if h.AfterCheck == nil && h.OnError == nil {
			continue
		}
		n := uint32(min(max(h.LatencySample, 1), 1<<30))
		if x.sample == 0 || n < x.sample {
			x.sample = n
		}
	}
	x.hooked = x.timed || len(x.before) > 0
	x.mws = o.middleware
	x.build()
	return x
}

// build chains the middleware around the (hooked) core.
func (x *extension) build() {
	inner := CheckFunc(x.l.checkN)
	if x.hooked {
		inner = x.hookedCheck
	}
	x.check = inner
	for i := len(x.mws) - 1; i >= 0; i-- {
		// A middleware that returns nil is skipped rather than left to make
		// every check panic.
		if c := x.mws[i](x.check); c != nil {
			x.check = c
		}
	}
}

// run calls the middleware chain, containing a panic in it. Without
// middleware it calls the hooked core directly: hooks contain their own
// panics, and the core does not panic in the caller's goroutine.
func (x *extension) run(ctx context.Context, key string, cost int) (Decision, error) {
	if len(x.mws) == 0 {
		return x.hookedCheck(ctx, key, cost)
	}
	return x.runGuarded(ctx, key, cost)
}

func (x *extension) runGuarded(ctx context.Context, key string, cost int) (d Decision, err error) {
	defer func() {
		if v := recover(); v != nil {
			x.report("middleware", v)
			d, err = Decision{}, fmt.Errorf("%w: middleware: %v", ErrPanic, v)
		}
	}()
	return x.check(ctx, key, cost)
}

// hookedCheck is the innermost CheckFunc when hooks are set.
func (x *extension) hookedCheck(ctx context.Context, key string, cost int) (Decision, error) {
	sw := x.startWatch()
	x.runBefore(ctx, key, cost)
	d, err := x.l.checkN(ctx, key, cost)
	if x.timed {
		x.runAfter(ctx, key, cost, &d, err, sw.elapsed())
	}
	return d, err
}

// epoch anchors the monotonic readings latencies are measured with:
// time.Since(epoch) reads one clock, time.Now two.
var epoch = time.Now()

// stopwatch is a latency measurement in progress, the monotonic time it
// started at; 0 means the check is not timed.
type stopwatch time.Duration

// startWatch starts timing a check if some hook wants its latency and the
// sampling picks it.
func (x *extension) startWatch() stopwatch {
	if !x.timed || (x.sample > 1 && rand.Uint32N(x.sample) != 0) {
		return 0
	}
	return stopwatch(max(time.Since(epoch), 1))
}

// elapsed returns the time since the watch started, at least 1ns, or 0
// for a check that is not timed.
func (s stopwatch) elapsed() time.Duration {
	if s == 0 {
		return 0
	}
	return max(time.Since(epoch)-time.Duration(s), 1)
}

func (x *extension) runBefore(ctx context.Context, key string, cost int) {
	for _, f := range x.before {
		x.callBefore(f, ctx, key, cost)
	}
}

func (x *extension) runAfter(ctx context.Context, key string, cost int, d *Decision, err error, lat time.Duration) {
	if err != nil {
		for _, f := range x.onErr {
			x.callOnError(f, ctx, key, cost, err, lat)
		}
		return
	}
	for _, f := range x.after {
		x.callAfter(f, ctx, key, cost, d, lat)
	}
}

func (x *extension) callBefore(f func(context.Context, string, int), ctx context.Context, key string, cost int) {
	defer x.contain("BeforeCheck")
	f(ctx, key, cost)
}

func (x *extension) callAfter(f func(context.Context, string, int, Decision, time.Duration), ctx context.Context, key string, cost int, d *Decision, lat time.Duration) {
	defer x.contain("AfterCheck")
	f(ctx, key, cost, *d, lat)
}

func (x *extension) callOnError(f func(context.Context, string, int, error, time.Duration), ctx context.Context, key string, cost int, err error, lat time.Duration) {
	defer x.contain("OnError")
	f(ctx, key, cost, err, lat)
}

// contain recovers a hook's panic. It must be deferred directly.
func (x *extension) contain(hook string) {
	if v := recover(); v != nil {
		x.report(hook, v)
	}
}

func (x *extension) report(where string, v any) {
	if x.logger != nil {
		x.logger.Error("flux: hook panicked", "hook", where, "panic", v)
	}
}

// batch runs a batch with hooks around it.
func (x *extension) batch(ctx context.Context, reqs []Request, out []Decision, itemErrs []error, eachInvalid bool) error {
	sw := x.startWatch()
	for i := range reqs {
		x.runBefore(ctx, reqs[i].Key, reqs[i].cost())
	}
	err := x.l.checkBatch(ctx, reqs, out, itemErrs, eachInvalid)
	if x.timed {
		x.afterBatch(ctx, reqs, out, itemErrs, err, sw.elapsed())
	}
	return err
}

// afterBatch runs AfterCheck or OnError for every item of a batch.
func (x *extension) afterBatch(ctx context.Context, reqs []Request, out []Decision, itemErrs []error, err error, lat time.Duration) {
	for i := range reqs {
		e := err
		if e == nil && itemErrs != nil && i < len(itemErrs) {
			e = itemErrs[i]
		}
		var d Decision
		if e == nil {
			d = out[i]
		}
		x.runAfter(ctx, reqs[i].Key, reqs[i].cost(), &d, e, lat)
	}
}

// asyncHook carries what a Future needs to run the after hooks in Wait.
type asyncHook struct {
	x    *extension
	ctx  context.Context
	key  string
	cost int
	sw   stopwatch
}

// startAsync runs the before hooks of an async check and returns what Wait
// needs for the after hooks (nil when there are none).
func (x *extension) startAsync(ctx context.Context, key string, cost int) *asyncHook {
	var h *asyncHook
	if x.timed {
		h = &asyncHook{x: x, ctx: ctx, key: key, cost: cost, sw: x.startWatch()}
	}
	x.runBefore(ctx, key, cost)
	return h
}

func (h *asyncHook) done(d Decision, err error) {
	h.x.runAfter(h.ctx, h.key, h.cost, &d, err, h.sw.elapsed())
}

// asyncBatchHook is asyncHook for a BatchFuture.
type asyncBatchHook struct {
	x    *extension
	ctx  context.Context
	reqs []Request
	sw   stopwatch
}

func (x *extension) startAsyncBatch(ctx context.Context, reqs []Request) *asyncBatchHook {
	var h *asyncBatchHook
	if x.timed {
		h = &asyncBatchHook{x: x, ctx: ctx, reqs: reqs, sw: x.startWatch()}
	}
	for i := range reqs {
		x.runBefore(ctx, reqs[i].Key, reqs[i].cost())
	}
	return h
}

func (h *asyncBatchHook) done(out []Decision, err error) {
	h.x.afterBatch(h.ctx, h.reqs, out, nil, err, h.sw.elapsed())
}
