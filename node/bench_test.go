package node

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// benchConfig has one limiter that admits everything the benchmarks send,
// so denials do not change the work measured.
func benchConfig(b *testing.B) Config {
	cfg := testConfig(b)
	cfg.Handlers = 0 // automatic
	cfg.Limiters = map[string]LimiterConfig{"api": {Rate: 1e9, Burst: 1e6}}
	return cfg
}

const benchKeys = 10_000

func checkBodies() [][]byte {
	bodies := make([][]byte, benchKeys)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, `{"limiter":"api","key":"user-%d","cost":1}`, i)
	}
	return bodies
}

func batchBody(start, n int) []byte {
	b := []byte(`{"requests":[`)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"limiter":"api","key":"user-%d"}`, (start+i)%benchKeys)
	}
	return append(b, "]}"...)
}

// BenchmarkHandlerCheck is the check handler without NATS: decode, look up,
// decide through the limiter's shard, encode.
func BenchmarkHandlerCheck(b *testing.B) {
	n, err := New(benchConfig(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	w, pub := pipelineOf(n, kindCheck)
	m := msg(kindCheck, nil)
	msgs := []*nats.Msg{m}
	bodies := checkBodies()
	i := 0
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		m.Data = bodies[i%benchKeys]
		if w.serve(msgs); pub.last().code != "" {
			b.Fatal(pub.replies[0])
		}
		i++
	}
	reportCPU(b, cpu0, 1)
}

// BenchmarkHandlerCheckStdlib is the same path done naively, with
// encoding/json for the request and the reply, for comparison.
func BenchmarkHandlerCheckStdlib(b *testing.B) {
	n, err := New(benchConfig(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	bodies := checkBodies()
	type req struct {
		Limiter string `json:"limiter"`
		Key     string `json:"key"`
		Cost    *int   `json:"cost"`
	}
	type rep struct {
		Allowed      bool  `json:"allowed"`
		Limit        int   `json:"limit"`
		Remaining    int   `json:"remaining"`
		RetryAfterNS int64 `json:"retry_after_ns"`
		ResetAfterNS int64 `json:"reset_after_ns"`
		DelayNS      int64 `json:"delay_ns"`
	}
	i := 0
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		var r req
		if err := json.Unmarshal(bodies[i%benchKeys], &r); err != nil {
			b.Fatal(err)
		}
		lim, _ := n.Limiter(r.Limiter)
		d, err := lim.CheckN(context.Background(), r.Key, *r.Cost)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(rep{d.Allowed, d.Limit, d.Remaining, int64(d.RetryAfter), int64(d.ResetAfter), int64(d.Delay)}); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportCPU(b, cpu0, 1)
}

// BenchmarkHandlerBatch100 is the check_batch handler without NATS, 100
// keys per request.
func BenchmarkHandlerBatch100(b *testing.B) {
	n, err := New(benchConfig(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	w, pub := pipelineOf(n, kindBatch)
	m := msg(kindBatch, nil)
	msgs := []*nats.Msg{m}
	bodies := make([][]byte, 100)
	for i := range bodies {
		bodies[i] = batchBody(i*100, 100)
	}
	i := 0
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		m.Data = bodies[i%len(bodies)]
		if w.serve(msgs); pub.last().code != "" {
			b.Fatal(pub.replies[0])
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/key")
	reportCPU(b, cpu0, 100)
}

// benchNATS drives a started node over NATS and reports checks per
// second. Like a real load generator it keeps `inflight` requests
// outstanding on each of `conns` connections with PublishRequest and one
// reply subscription per connection (no per-request inbox or timer), so
// the client costs little next to the NATS server and the node, which all
// share the machine's cores.
func benchNATS(b *testing.B, bodies [][]byte, keysPer int) {
	n := startNode(b, benchConfig(b))
	driveNATS(b, n, SubjectCheck+suffixFor(keysPer), bodies, keysPer)
}

// driveNATS is the load generator of benchNATS, against any responder on
// subject.
func driveNATS(b *testing.B, n *Node, subject string, bodies [][]byte, keysPer int) {
	const conns, inflight = 2, 128
	var sent atomic.Int64
	var failed atomic.Value
	type conn struct {
		nc     *nats.Conn
		inbox  string
		window chan struct{}
		got    atomic.Int64
	}
	cs := make([]*conn, conns)
	for i := range cs {
		c := &conn{nc: connect(b, n), inbox: nats.NewInbox(), window: make(chan struct{}, inflight)}
		sub, err := c.nc.Subscribe(c.inbox, func(m *nats.Msg) {
			if len(m.Header) != 0 && m.Header.Get("Nats-Service-Error-Code") != "" {
				failed.Store(fmt.Errorf("error reply %s", m.Header.Get("Nats-Service-Error")))
			}
			c.got.Add(1)
			<-c.window
		})
		if err != nil {
			b.Fatal(err)
		}
		sub.SetPendingLimits(-1, -1)
		cs[i] = c
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			for {
				i := sent.Add(1)
				if i > int64(b.N) {
					return
				}
				c.window <- struct{}{}
				if err := c.nc.PublishRequest(subject, c.inbox, bodies[int(i)%len(bodies)]); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range cs {
		c.nc.Flush()
		for len(c.window) > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	total := int64(0)
	for _, c := range cs {
		total += c.got.Load()
	}
	if total != int64(b.N) {
		b.Fatalf("%d replies for %d requests", total, b.N)
	}
	b.ReportMetric(float64(b.N*keysPer)/b.Elapsed().Seconds(), "checks/s")
	// CPU time of the whole process (load generator, NATS server and node)
	// per check: unlike checks/s it hardly depends on what else runs on a
	// shared machine, and 2 cores / cpu-ns/check bounds the throughput.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*keysPer), "cpu-ns/check")
	if g := n.svc.doors[0].groups.Load(); g > 0 {
		b.ReportMetric(float64(n.svc.doors[0].requests.Load())/float64(g), "reqs/group")
	}
}

// reportCPU reports the process's CPU time per check since cpu0.
func reportCPU(b *testing.B, cpu0 time.Duration, checksPerOp int) {
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*checksPerOp), "cpu-ns/check")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func suffixFor(keysPer int) string {
	if keysPer > 1 {
		return "_batch"
	}
	return ""
}

// BenchmarkNATSCheck: one key per request, 256 requests in flight over 4
// connections, through the embedded NATS server (client, server and node
// share the machine's cores).
func BenchmarkNATSCheck(b *testing.B) {
	benchNATS(b, checkBodies(), 1)
}

// BenchmarkNATSEcho is the floor under BenchmarkNATSCheck: the same load
// against a responder that answers every request with a fixed decision
// from an async queue subscription on the node's own connection, doing
// no work.
func BenchmarkNATSEcho(b *testing.B) {
	n := startNode(b, benchConfig(b))
	reply := []byte(`{"allowed":true,"limit":1000001,"remaining":1000000,"retry_after_ns":0,"reset_after_ns":1,"delay_ns":0}`)
	for range 4 {
		if _, err := n.nc.QueueSubscribe("echo", "q", func(m *nats.Msg) { m.Respond(reply) }); err != nil {
			b.Fatal(err)
		}
	}
	driveNATS(b, n, "echo", checkBodies(), 1)
}

// BenchmarkNATSBatch100: 100 keys per request, as BenchmarkNATSCheck.
func BenchmarkNATSBatch100(b *testing.B) {
	bodies := make([][]byte, 100)
	for i := range bodies {
		bodies[i] = batchBody(i*100, 100)
	}
	benchNATS(b, bodies, 100)
}
