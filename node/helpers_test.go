package node

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig is a node on random loopback ports with a temporary data dir
// and limiters "api" (100/s, burst 20: capacity 21) and "slow" (1/s, no
// burst: capacity 1).
func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.NATSListen = "127.0.0.1:-1"
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.NodeID = "test"
	cfg.Handlers = 2
	cfg.Limiters = map[string]LimiterConfig{
		"api":  {Rate: 100, Burst: 20},
		"slow": {Rate: 1, Burst: 0},
	}
	return cfg
}

// startNode starts a node and stops it when the test ends.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		n.Shutdown(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return n
}

// connect opens a client connection to the node, closed when the test ends.
func connect(t testing.TB, n *Node, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// reply is a raw reply: its body and error headers.
type reply struct {
	data []byte
	code int
	desc string
}

func request(t testing.TB, nc *nats.Conn, subject, body string) reply {
	t.Helper()
	msg, err := nc.Request(subject, []byte(body), 5*time.Second)
	if err != nil {
		t.Fatalf("request %s %q: %v", subject, body, err)
	}
	r := reply{data: msg.Data}
	if c := msg.Header.Get(micro.ErrorCodeHeader); c != "" {
		r.code, _ = strconv.Atoi(c)
		r.desc = msg.Header.Get(micro.ErrorHeader)
	}
	return r
}

// decision is a decoded decision with encoding/json, independent of the
// wire package; pointers tell absent fields from zeros.
type decision struct {
	Allowed      *bool  `json:"allowed"`
	Limit        *int64 `json:"limit"`
	Remaining    *int64 `json:"remaining"`
	RetryAfterNS *int64 `json:"retry_after_ns"`
	ResetAfterNS *int64 `json:"reset_after_ns"`
	DelayNS      *int64 `json:"delay_ns"`
	Error        *struct {
		Code        int    `json:"code"`
		Reason      string `json:"reason"`
		Description string `json:"description"`
	} `json:"error"`
}

func (d decision) complete() bool {
	return d.Allowed != nil && d.Limit != nil && d.Remaining != nil && d.RetryAfterNS != nil && d.ResetAfterNS != nil && d.DelayNS != nil
}

func decodeDecision(t testing.TB, data []byte) decision {
	t.Helper()
	var d decision
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("reply %q: %v", data, err)
	}
	return d
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakePub receives a node's replies without NATS, in reused buffers, so
// that running the pipeline does not allocate for it.
type fakePub struct {
	replies []fakeReply
	n       int // replies received since the last reset
}

type fakeReply struct {
	subject string
	body    []byte
	code    string // the error code, "" for a success
}

func (p *fakePub) add(subject string, data []byte, code string) {
	if p.n == len(p.replies) {
		p.replies = append(p.replies, fakeReply{})
	}
	r := &p.replies[p.n]
	r.subject, r.body, r.code = subject, append(r.body[:0], data...), code
	p.n++
}

func (p *fakePub) Publish(subject string, data []byte) error {
	p.add(subject, data, "")
	return nil
}

func (p *fakePub) PublishMsg(m *nats.Msg) error {
	p.add(m.Subject, m.Data, m.Header.Get(micro.ErrorCodeHeader))
	return nil
}

// last returns the last reply and forgets every reply.
func (p *fakePub) last() fakeReply {
	r := p.replies[p.n-1]
	p.n = 0
	return r
}

// pipelineOf returns a worker of kind k of a node that is not started,
// whose replies go to the returned fakePub.
func pipelineOf(n *Node, k kind) (*worker, *fakePub) {
	p := &fakePub{}
	n.pub = p
	return newWorker(n, &door{kind: k, subject: k.subject(), name: k.endpoint()}), p
}

// msg is a request as NATS delivers it, with an inbox for its reply.
func msg(k kind, body []byte) *nats.Msg {
	return &nats.Msg{Subject: k.subject(), Reply: "_INBOX.test", Data: body}
}
