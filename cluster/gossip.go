package cluster

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	flux "github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
)

const gossipStripes = 16 // power of two

// gossiper aggregates one limiter's admissions per key and publishes them,
// as gubernator's global.go aggregates hits: the first admission after a
// publication arms a timer of SyncInterval, and the batch leaves when it
// fires or as soon as SyncBatch distinct keys are waiting.
//
// add and flush are safe for simultaneous use (keys are spread over
// striped maps so that concurrent checks rarely share a lock); one
// goroutine, owned by the gossiper, flushes on the timer. stop publishes
// what is left and waits for that goroutine.
type gossiper struct {
	bus      bus.Bus
	limiter  string
	interval time.Duration
	batch    int64
	seed     maphash.Seed

	stripes [gossipStripes]struct {
		mu sync.Mutex
		m  map[string]pending
		_  [48]byte // a stripe per 64-byte cache line
	}
	waiting atomic.Int64 // distinct keys waiting (transiently off during a flush)

	first, full chan struct{} // buffered 1
	quit, done  chan struct{}
	stopOnce    sync.Once

	published, publishErrs atomic.Uint64
}

// pending is the aggregate of one key's admissions since the last
// publication: the total cost, at the time of the latest admission.
type pending struct {
	at   int64
	cost int
}

func newGossiper(b bus.Bus, limiter string, lc LimiterConfig) *gossiper {
	g := &gossiper{
		bus: b, limiter: limiter, interval: lc.SyncInterval, batch: int64(lc.SyncBatch),
		seed:  maphash.MakeSeed(),
		first: make(chan struct{}, 1),
		full:  make(chan struct{}, 1),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	for i := range g.stripes {
		g.stripes[i].m = make(map[string]pending)
	}
	go g.run()
	return g
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// add records an admission of cost for key at time at (Unix ns).
//
// Several admissions of a key in one interval become one update carrying
// their total cost at the latest time: applied with max(TAT, at) + cost·T
// this is never below what applying them one by one gives, so aggregation
// can only make peers stricter, never looser.
func (g *gossiper) add(key string, at int64, cost int) {
	s := &g.stripes[maphash.String(g.seed, key)&(gossipStripes-1)]
	s.mu.Lock()
	p, ok := s.m[key]
	p.at = max(p.at, at)
	p.cost += cost
	s.m[key] = p
	s.mu.Unlock()
	if ok {
		return
	}
	switch n := g.waiting.Add(1); {
	case n == 1:
		signal(g.first)
	case n == g.batch:
		signal(g.full)
	}
}

func (g *gossiper) run() {
	defer close(g.done)
	t := time.NewTimer(g.interval)
	t.Stop()
	for {
		// Wait for the first admission, unless some arrived during the
		// last flush.
		if g.waiting.Load() <= 0 {
			select {
			case <-g.first:
			case <-g.quit:
				g.flush()
				return
			}
		}
		t.Reset(g.interval)
		select {
		case <-t.C:
		case <-g.full:
			t.Stop()
		case <-g.quit:
			t.Stop()
			g.flush()
			return
		}
		g.flush()
	}
}

// flush publishes every aggregate waiting. It may run on any goroutine,
// concurrently with the gossiper's own flushes.
func (g *gossiper) flush() {
	var items []flux.Update
	for i := range g.stripes {
		s := &g.stripes[i]
		s.mu.Lock()
		if len(s.m) == 0 {
			s.mu.Unlock()
			continue
		}
		m := s.m
		s.m = make(map[string]pending, len(m))
		s.mu.Unlock()
		for k, p := range m {
			items = append(items, flux.Update{Key: k, At: p.at, Cost: p.cost})
		}
	}
	g.waiting.Add(-int64(len(items)))
	// Drain stale signals: what they announced is in this flush.
	select {
	case <-g.full:
	default:
	}
	if len(items) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(g.interval, 100*time.Millisecond))
	defer cancel()
	if err := g.bus.Publish(ctx, bus.Updates{Limiter: g.limiter, Items: items}); err != nil {
		g.publishErrs.Add(1)
		return
	}
	g.published.Add(uint64(len(items)))
}

// stop publishes what is waiting and stops the goroutine. Idempotent.
func (g *gossiper) stop() {
	g.stopOnce.Do(func() { close(g.quit) })
	<-g.done
}
