package bench

import (
	"sync"
	"testing"

	"github.com/fluxlimiter/flux/algorithm"
)

// An Anchor is one of the reference measurements DESIGN.md section 8 gives
// for "this kind of machine": what plain Go does on the machine at hand,
// without Flux, so that Flux's figures can be read against the machine
// they were taken on. Design is the anchor's value in the design notes,
// in ns per operation.
type Anchor struct {
	Name   string
	Design float64
	Fn     func(*testing.B)
}

// Anchors are the design's machine anchors that do not need a network
// (x/time/rate is measured by XTimeRate, beside Flux). Each reports ns/op.
var Anchors = []Anchor{
	{"channel round trip, pooled reply channel", 330, AnchorRoundTrip},
	{"64 requests per channel message, per request", 6, AnchorBatchMessage},
	{"one-goroutine map GCRA step, 1k keys", 16, AnchorMapStep},
}

// DesignXTimeRate is the design's anchor for XTimeRate: ns per Allow with
// parallel goroutines.
const DesignXTimeRate = 94

// anchorReq is a request to the anchors' server goroutine: n items to
// answer, and where to answer.
type anchorReq struct {
	items []int64
	reply chan int64
}

// anchorServer starts a goroutine that answers each request with the sum
// of its items (touching each, as a shard would) until in is closed; the
// returned function closes it and waits.
func anchorServer() (chan<- anchorReq, func()) {
	in := make(chan anchorReq, 1024)
	var wg sync.WaitGroup
	wg.Go(func() {
		for r := range in {
			var sum int64
			for _, v := range r.items {
				sum += v
			}
			r.reply <- sum
		}
	})
	return in, func() { close(in); wg.Wait() }
}

// AnchorRoundTrip measures one request and its reply between two
// goroutines, the reply channel (buffered 1) taken from a sync.Pool, as
// Flux's Check does. One caller.
func AnchorRoundTrip(b *testing.B) { anchorMessages(b, 1) }

// AnchorBatchMessage is AnchorRoundTrip with 64 items per message; it
// reports ns per item.
func AnchorBatchMessage(b *testing.B) { anchorMessages(b, BatchSize) }

func anchorMessages(b *testing.B, n int) {
	in, stop := anchorServer()
	defer stop()
	pool := sync.Pool{New: func() any { return make(chan int64, 1) }}
	items := make([]int64, n)
	b.ReportAllocs()
	for b.Loop() {
		rc := pool.Get().(chan int64)
		in <- anchorReq{items: items, reply: rc}
		<-rc
		pool.Put(rc)
	}
	reportPerKey(b, n)
}

// AnchorMapStep measures algorithm.GCRA's step on states held in a plain
// map[string]*int64 over 1000 keys (one lookup, the state updated in
// place), from one goroutine: the work a shard does per key, without the
// shard.
func AnchorMapStep(b *testing.B) {
	g, err := algorithm.NewGCRA(Limit.Rate, Limit.Burst)
	if err != nil {
		b.Fatal(err)
	}
	keys := KeyNames(1000)
	m := make(map[string]*int64, len(keys))
	for _, k := range keys {
		tat := g.Fresh(0)
		m[k] = &tat
	}
	now := int64(1_700_000_000e9)
	var d algorithm.Decision
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		k := keys[i]
		if i++; i == len(keys) {
			i = 0
		}
		now += 1000 // 1 µs per step: every step is admitted at 1e6/s
		p := m[k]
		*p, _ = g.StepInto(*p, now, 1, &d)
	}
	reportPerKey(b, 1)
}
