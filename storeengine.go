package flux

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/failure"
	"github.com/fluxlimiter/flux/internal/errs"
	"github.com/fluxlimiter/flux/shard"
	"github.com/fluxlimiter/flux/store"
)

// startEngine starts the limiter's engine: the shards, and with
// StoreAtomic the engine that lets the store decide, over them.
func startEngine(limit Limit, start func(options) engine, o options) (engine, error) {
	if o.atomic == nil {
		return start(o), nil
	}
	if a := limit.algorithm(); a != GCRA {
		return nil, fmt.Errorf("%w: StoreAtomic supports gcra, not %s", ErrInvalidOption, a)
	}
	g, err := compileGCRA(limit)
	if err != nil {
		return nil, err
	}
	return newAtomicEngine(g.(algorithm.GCRA), start(o).(*group[int64]), *o.atomic, o.clock), nil
}

// atomicEngine decides in the store; its group holds the local fallback.
type atomicEngine struct {
	st      store.AtomicGCRA
	batcher store.AtomicGCRABatch // nil if the store has none
	name    string
	timeout time.Duration
	policy  failure.Policy
	retry   time.Duration
	backoff int64
	clk     clock.Clock
	gcra    atomic.Pointer[algorithm.GCRA]
	local   *group[int64]

	downAt atomic.Int64 // clock time of the last store failure; 0 when up

	// counts holds the store counters of each local shard, by the shard
	// of the key they are about, so that Stats reports them per shard as
	// the other stores' are.
	counts []storeCounts

	comb combiner // single checks pipelined together (storecombine.go)

	mirrors  chan mirrorItem // to mirrorLoop (StoreFailLocal only)
	quit     chan struct{}   // stops mirrorLoop
	mirrorWG sync.WaitGroup

	mu      sync.Mutex // orders async.Go against stop
	stopped bool
	async   sync.WaitGroup
	done    chan struct{} // closed once stopped
}

// storeCounts are the store counters of one local shard's keys.
type storeCounts struct {
	checks, checkErrs, fallbacks atomic.Uint64
}

// count returns the counters of key's shard.
func (e *atomicEngine) count(key string) *storeCounts { return &e.counts[e.local.index(key)] }

// mirrorItem is a key's TAT as the store answered it, or a barrier that
// mirrorLoop closes once everything sent before it is recorded.
type mirrorItem struct {
	key     string
	tat     int64
	barrier chan struct{}
}

// mirrorQueue bounds the mirrored states waiting to be recorded; beyond
// it they are dropped, which only makes the local fallback more
// conservative.
const mirrorQueue = 8192

// maxParallel bounds the concurrent store calls of one batch for a store
// that cannot pipeline.
const maxParallel = 16

func newAtomicEngine(g algorithm.GCRA, local *group[int64], cfg AtomicStoreConfig, clk clock.Clock) *atomicEngine {
	if cfg.Timeout <= 0 {
		cfg.Timeout = shard.DefaultStoreTimeout
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = shard.DefaultStoreRetryAfter
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = shard.DefaultFlushEvery
	}
	e := &atomicEngine{
		st:      cfg.Store,
		name:    cfg.Limiter,
		timeout: cfg.Timeout,
		policy:  cfg.OnFailure,
		retry:   cfg.RetryAfter,
		backoff: int64(cfg.Backoff),
		clk:     clk,
		local:   local,
		counts:  make([]storeCounts, len(local.shards)),
		done:    make(chan struct{}),
	}
	e.batcher, _ = cfg.Store.(store.AtomicGCRABatch)
	e.gcra.Store(&g)
	if e.policy == failure.Local {
		// The mirror remembers the keys it forgets at full allowance, so
		// that the fallback decides them from memory as fresh keys.
		for _, sh := range local.shards {
			_ = sh.RememberFresh(context.Background(), 0) // fails only on a stopped shard
		}
		e.mirrors, e.quit = make(chan mirrorItem, mirrorQueue), make(chan struct{})
		e.mirrorWG.Go(e.mirrorLoop)
	}
	return e
}

// now reads the clock, wrapping a failure in ErrClock.
func (e *atomicEngine) now() (int64, error) {
	now, err := e.clk.Now()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errs.Clock, err)
	}
	return now, nil
}

// down reports whether the store failed less than Backoff ago.
func (e *atomicEngine) down(now int64) bool {
	at := e.downAt.Load()
	return at != 0 && now-at < e.backoff
}

// up records that the store answered (without writing the shared word
// when there is nothing to change).
func (e *atomicEngine) up() {
	if e.downAt.Load() != 0 {
		e.downAt.Store(0)
	}
}

// failed records a store failure at now.
func (e *atomicEngine) failed(now int64, key string) {
	e.count(key).checkErrs.Add(1)
	e.downAt.Store(max(now, 1))
}

// callerError reports whether err is the caller's fault or the caller's
// context ending rather than the store's failure: such errors are returned
// as they are, not decided by the failure policy.
func callerError(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, errs.Clock) || errors.Is(err, errs.InvalidCost) || errors.Is(err, errs.CostExceedsBurst) ||
		errors.Is(err, errs.InvalidRate) || errors.Is(err, store.ErrInvalidKey)
}

func (e *atomicEngine) check(ctx context.Context, key string, cost int64) (Decision, error) {
	now, err := e.now()
	if err != nil {
		return Decision{}, err
	}
	return e.decide(ctx, key, cost, now)
}

// decide checks one request in the store at now, or by the failure policy.
func (e *atomicEngine) decide(ctx context.Context, key string, cost, now int64) (Decision, error) {
	g := *e.gcra.Load()
	if cost > g.Capacity() { // the limit shrank after the caller validated the cost
		return Decision{}, fmt.Errorf("%w: cost %d, capacity %d", errs.CostExceedsBurst, cost, g.Capacity())
	}
	if e.down(now) {
		return e.fallback(ctx, key, cost, g)
	}
	e.count(key).checks.Add(1)
	var d Decision
	var err error
	at := now
	if e.batcher != nil {
		d, at, err = e.combined(ctx, key, cost, g)
	} else {
		cctx, cancel := context.WithTimeout(ctx, e.timeout)
		d, err = e.st.CheckGCRA(cctx, e.name, key, g, now, cost)
		cancel()
	}
	if err == nil {
		e.up()
		if e.policy == failure.Local {
			e.mirror(key, d, at)
		}
		return d, nil
	}
	if callerError(ctx, err) {
		return Decision{}, err
	}
	e.failed(now, key)
	return e.fallback(ctx, key, cost, g)
}

// mirror hands the state the store answered for key (its TAT is now +
// ResetAfter) to mirrorLoop, without waiting: the local group then holds
// what StoreFailLocal decides from. Idle states are not recorded.
func (e *atomicEngine) mirror(key string, d Decision, now int64) {
	if d.ResetAfter <= 0 {
		return
	}
	select {
	case e.mirrors <- mirrorItem{key: key, tat: now + int64(d.ResetAfter)}:
	default: // full: dropped
	}
}

// syncMirror waits until every state mirrored so far is in the local
// group.
func (e *atomicEngine) syncMirror(ctx context.Context) {
	b := make(chan struct{})
	select {
	case e.mirrors <- mirrorItem{barrier: b}:
	case <-ctx.Done():
		return
	}
	select {
	case <-b:
	case <-ctx.Done():
	case <-e.quit:
	}
}

// mirrorLoop records mirrored states in the local group: it gathers them
// for up to mirrorEvery (or mirrorBatch states, or until a barrier comes)
// and sends each shard its part in one Restore, keeping the latest TAT of
// a key that comes more than once.
func (e *atomicEngine) mirrorLoop() {
	parts := make([][]shard.Entry[int64], len(e.local.shards))
	at := make(map[string]int) // key -> index in its part, this batch
	var barriers []chan struct{}
	tick := time.NewTimer(time.Hour)
	tick.Stop()
	defer tick.Stop()
	n := 0
	flush := func() {
		for j, es := range parts {
			if len(es) > 0 {
				// The shard runs Restore before it returns (no deadline), so
				// the slice can be reused.
				_ = e.local.shards[j].Restore(context.Background(), es)
				parts[j] = es[:0]
			}
		}
		clear(at)
		for _, b := range barriers {
			close(b)
		}
		barriers, n = barriers[:0], 0
	}
	for {
		select {
		case it := <-e.mirrors:
			if it.barrier != nil {
				barriers = append(barriers, it.barrier)
				tick.Stop()
				flush()
				continue
			}
			j := e.local.index(it.key)
			if i, ok := at[it.key]; ok {
				parts[j][i].State = max(parts[j][i].State, it.tat)
				continue
			}
			at[it.key] = len(parts[j])
			parts[j] = append(parts[j], shard.Entry[int64]{Key: it.key, State: it.tat})
			if n++; n == 1 {
				tick.Reset(mirrorEvery)
			} else if n == mirrorBatch {
				tick.Stop()
				flush()
			}
		case <-tick.C:
			flush()
		case <-e.quit:
			return
		}
	}
}

// mirrorEvery and mirrorBatch bound how long and how many mirrored states
// wait before they are recorded.
const (
	mirrorEvery = 2 * time.Millisecond
	mirrorBatch = 1024
)

// fallback decides a request the store could not, by the failure policy.
func (e *atomicEngine) fallback(ctx context.Context, key string, cost int64, g algorithm.GCRA) (Decision, error) {
	e.count(key).fallbacks.Add(1)
	capacity := int(g.Capacity())
	deny := Decision{Limit: capacity, RetryAfter: e.retry}
	switch e.policy {
	case failure.Open:
		return Decision{Allowed: true, Limit: capacity, Remaining: capacity - 1}, nil
	case failure.Closed:
		return deny, nil
	}
	e.syncMirror(ctx)
	d, known, err := e.local.shards[e.local.index(key)].CheckKnown(ctx, key, cost)
	if err != nil {
		return Decision{}, err
	}
	if !known {
		// Not checked since start: the store may hold it throttled, so
		// never forgive. (A key checked since start is held, or was
		// forgotten at full allowance and is decided as a fresh key.)
		return deny, nil
	}
	return d, nil
}

func (e *atomicEngine) checkAsync(ctx context.Context, key string, cost int64) (chan shard.Reply, <-chan struct{}, error) {
	rc := make(chan shard.Reply, 1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil, nil, errs.Closed
	}
	e.async.Go(func() {
		d, err := e.check(ctx, key, cost)
		rc <- shard.Reply{D: d, Err: err}
	})
	return rc, e.done, nil
}

// start decides the batch in a goroutine of the engine's. With direct the
// decisions are written into out; otherwise into scratch that finish
// copies, so that a batch abandoned by its caller never writes into out.
func (e *atomicEngine) start(ctx context.Context, reqs []Request, out []Decision, direct bool) (*pending, error) {
	p := &pending{parts: make([]part, 1), done: make(chan *shard.Batch, 1), sent: 1, direct: direct}
	pt := &p.parts[0]
	pt.b.Done = p.done
	if direct {
		pt.b.Out = out[:len(reqs)]
	} else {
		pt.b.Out = make([]Decision, len(reqs))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil, errs.Closed
	}
	e.async.Go(func() {
		e.batch(ctx, reqs, &pt.b)
		pt.b.Done <- &pt.b
	})
	return p, nil
}

// batch decides reqs into b.Out, and b.Errs for items that cannot be
// decided.
func (e *atomicEngine) batch(ctx context.Context, reqs []Request, b *shard.Batch) {
	now, err := e.now()
	if err != nil {
		b.Err = err
		return
	}
	g := *e.gcra.Load()
	itemErr := func(i int, err error) {
		if b.Errs == nil {
			b.Errs = make([]error, len(reqs))
		}
		b.Errs[i] = err
	}
	todo := make([]int, 0, len(reqs)) // items for the store
	for i := range reqs {
		r := &reqs[i]
		switch cost := int64(r.cost()); {
		case cost > g.Capacity():
			itemErr(i, fmt.Errorf("%w: cost %d, capacity %d", errs.CostExceedsBurst, cost, g.Capacity()))
		case e.down(now):
			b.Out[i], err = e.fallback(ctx, r.Key, cost, g)
			if err != nil {
				itemErr(i, err)
			}
		default:
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return
	}
	for _, i := range todo {
		e.count(reqs[i].Key).checks.Add(1)
	}
	bctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	failed := make([]error, len(reqs)) // store errors, by item
	if e.batcher != nil {
		keys := make([]string, len(todo))
		costs := make([]int64, len(todo))
		out := make([]Decision, len(todo))
		ierrs := make([]error, len(todo))
		for j, i := range todo {
			keys[j], costs[j] = reqs[i].Key, int64(reqs[i].cost())
		}
		err := e.batcher.CheckGCRABatch(bctx, e.name, g, now, keys, costs, out, ierrs)
		for j, i := range todo {
			switch {
			case err != nil:
				failed[i] = err
			case ierrs[j] != nil:
				failed[i] = ierrs[j]
			default:
				b.Out[i] = out[j]
			}
		}
	} else {
		e.parallel(bctx, reqs, todo, g, now, b.Out, failed)
	}
	ok := false
	for _, i := range todo {
		err := failed[i]
		switch {
		case err == nil:
			ok = true
			if e.policy == failure.Local {
				e.mirror(reqs[i].Key, b.Out[i], now)
			}
			continue
		case callerError(ctx, err):
			itemErr(i, err)
			continue
		}
		e.failed(now, reqs[i].Key)
		d, ferr := e.fallback(ctx, reqs[i].Key, int64(reqs[i].cost()), g)
		b.Out[i] = d
		if ferr != nil {
			itemErr(i, ferr)
		}
	}
	if ok {
		e.up()
	}
}

// parallel sends the items of todo to the store as concurrent calls, at
// most maxParallel at a time; the items of one key are sent one after
// another, in order.
func (e *atomicEngine) parallel(ctx context.Context, reqs []Request, todo []int, g algorithm.GCRA, now int64, out []Decision, failed []error) {
	chains := make(map[string][]int, len(todo))
	order := make([]string, 0, len(todo))
	for _, i := range todo {
		k := reqs[i].Key
		if _, ok := chains[k]; !ok {
			order = append(order, k)
		}
		chains[k] = append(chains[k], i)
	}
	run := func(chain []int) {
		for _, i := range chain {
			out[i], failed[i] = e.st.CheckGCRA(ctx, e.name, reqs[i].Key, g, now, int64(reqs[i].cost()))
		}
	}
	if len(order) == 1 {
		run(chains[order[0]])
		return
	}
	next := make(chan []int)
	var wg sync.WaitGroup
	for range min(len(order), maxParallel) {
		wg.Go(func() {
			for c := range next {
				run(c)
			}
		})
	}
	for _, k := range order {
		next <- chains[k]
	}
	close(next)
	wg.Wait()
}

func (e *atomicEngine) finish(ctx context.Context, p *pending, out []Decision, itemErrs []error) error {
	var b *shard.Batch
	select {
	case b = <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if b.Err != nil {
		return b.Err
	}
	if !p.direct {
		copy(out, b.Out)
	}
	for i, err := range b.Errs {
		if err == nil {
			continue
		}
		if itemErrs == nil {
			return &BatchError{Index: i, Err: err}
		}
		itemErrs[i] = err
	}
	return nil
}

// apply has nothing to do: every admission is already in the store.
func (e *atomicEngine) apply(context.Context, []Update) error { return nil }

func (e *atomicEngine) setLimit(ctx context.Context, lim Limit) (int64, error) {
	alg, err := compileGCRA(lim)
	if err != nil {
		return 0, err
	}
	if _, err := e.local.setLimit(ctx, lim); err != nil {
		return 0, err
	}
	g := alg.(algorithm.GCRA)
	e.gcra.Store(&g)
	return g.Capacity(), nil
}

func (e *atomicEngine) cleanup(ctx context.Context, i int, staleAfter time.Duration) (int, error) {
	return e.local.cleanup(ctx, i, staleAfter)
}

// snapshot returns nothing: the state lives in the store.
func (e *atomicEngine) snapshot(context.Context) ([]KeyState, error) { return nil, nil }

// restore has nothing to do: the state lives in the store.
func (e *atomicEngine) restore(context.Context, []KeyState) error { return nil }

func (e *atomicEngine) shardCount() int      { return e.local.shardCount() }
func (e *atomicEngine) len() int             { return e.local.len() }
func (e *atomicEngine) stats() []shard.Stats { return e.local.stats() }

func (e *atomicEngine) storeStats() []shard.StoreStats {
	out := make([]shard.StoreStats, len(e.counts))
	for i := range e.counts {
		c := &e.counts[i]
		out[i] = shard.StoreStats{Loads: c.checks.Load(), LoadErrors: c.checkErrs.Load(), Fallbacks: c.fallbacks.Load()}
	}
	return out
}

// stop waits for the checks in flight (each bounded by the timeout), then
// stops the local group.
func (e *atomicEngine) stop() {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.async.Wait()
	if e.quit != nil {
		close(e.quit)
		e.mirrorWG.Wait()
	}
	close(e.done)
	e.local.stop()
}
