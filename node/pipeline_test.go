package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// endpointStats sums micro's $SRV.STATS counters per subject.
func endpointStats(t *testing.T, nc *nats.Conn) (requests, errs map[string]int) {
	t.Helper()
	var stats micro.Stats
	if err := json.Unmarshal(request(t, nc, "$SRV.STATS.flux", "").data, &stats); err != nil {
		t.Fatal(err)
	}
	requests, errs = map[string]int{}, map[string]int{}
	for _, e := range stats.Endpoints {
		requests[e.Subject] += e.NumRequests
		errs[e.Subject] += e.NumErrors
	}
	return requests, errs
}

// Every request the node answers is counted in $SRV.STATS, however many
// are in flight and decided together: nats micro stats flux shows them
// all.
func TestStatsCountEveryRequest(t *testing.T) {
	n := startNode(t, testConfig(t))
	nc := connect(t, n)
	const checks, batches, bad = 600, 40, 30
	total := checks + batches + bad
	replies := make(chan *nats.Msg, total)
	inbox := nats.NewInbox()
	sub, err := nc.ChanSubscribe(inbox+".*", replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// All in flight at once, so that requests wait in the coalescer and
	// are decided together.
	for i := range checks {
		body := fmt.Appendf(nil, `{"limiter":"api","key":"k%d"}`, i%50)
		if err := nc.PublishRequest(SubjectCheck, fmt.Sprintf("%s.c%d", inbox, i), body); err != nil {
			t.Fatal(err)
		}
		if i < batches {
			body := fmt.Appendf(nil, `{"requests":[{"limiter":"api","key":"b%d"},{"limiter":"nope","key":"x"}]}`, i)
			if err := nc.PublishRequest(SubjectCheckBatch, fmt.Sprintf("%s.b%d", inbox, i), body); err != nil {
				t.Fatal(err)
			}
		}
		if i < bad {
			if err := nc.PublishRequest(SubjectCheck, fmt.Sprintf("%s.e%d", inbox, i), []byte(`{"limiter":"nope","key":"x"}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for len(got) < total {
		select {
		case m := <-replies:
			got[m.Subject] = true
		case <-timeout:
			t.Fatalf("%d of %d replies", len(got), total)
		}
	}
	requests, errs := endpointStats(t, nc)
	if requests[SubjectCheck] != checks+bad || requests[SubjectCheckBatch] != batches {
		t.Fatalf("micro counted %d checks and %d batches, want %d and %d", requests[SubjectCheck], requests[SubjectCheckBatch], checks+bad, batches)
	}
	// A check answered with an error is an error of its endpoint; a batch
	// whose items fail is not (its reply is a success).
	if errs[SubjectCheck] != bad || errs[SubjectCheckBatch] != 0 {
		t.Fatalf("micro counted %d and %d errors, want %d and 0", errs[SubjectCheck], errs[SubjectCheckBatch], bad)
	}
	// The service's own Stats agree.
	sum := 0
	for _, e := range n.Stats().Endpoints {
		sum += e.NumRequests
	}
	if sum != total { // $SRV requests are not endpoint requests
		t.Fatalf("Stats() counts %d requests, want %d", sum, total)
	}
}

// A client may not make the node publish on a subject the client does
// not own: the node's internal subjects, the KV store's, the service's.
// The requests are dropped and counted; an inbox still gets its answer.
func TestReplyToForbiddenSubjects(t *testing.T) {
	cfg := testConfig(t)
	cfg.Store = StoreNATSKV
	n := startNode(t, cfg)
	targets := []string{
		"_FLUX.v1.flux.gossip", "_FLUX.v1.flux.hb",
		"$KV.flux.YXBpL2djcmE.dmljdGlt", // a user's record in the nats-kv store
		"$JS.API.STREAM.DELETE.KV_flux",
		"$SRV.PING", "flux.v1.nothing", "other.inbox",
	}
	// The test's connections have every right (no auth on the embedded
	// server), like the node's own: the spy sees anything published on
	// the targets.
	spy := connect(t, n)
	leaked := make(chan *nats.Msg, 64)
	for _, subj := range targets {
		if _, err := spy.ChanSubscribe(subj, leaked); err != nil {
			t.Fatal(err)
		}
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	attacker := connect(t, n)
	sent := 0
	for _, to := range targets {
		for _, r := range []struct{ subject, body string }{
			{SubjectCheck, `{"limiter":"api","key":"victim"}`},
			{SubjectCheck, `{"limiter":"nope","key":"x"}`}, // an error reply
			{SubjectCheckBatch, `{"requests":[{"limiter":"api","key":"victim"}]}`},
			{SubjectLimiters, ``},
		} {
			if err := attacker.PublishRequest(r.subject, to, []byte(r.body)); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	// A legitimate request is still answered.
	if r := request(t, attacker, SubjectCheck, `{"limiter":"api","key":"alice"}`); r.code != 0 {
		t.Fatalf("inbox request: %d %s", r.code, r.desc)
	}
	waitFor(t, "every forbidden reply counted", 5*time.Second, func() bool {
		return metric(t, n, "flux_node_replies_refused_total", nil) == float64(sent)
	})
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-leaked:
		t.Fatalf("the node published on %s: %q", m.Subject, m.Data)
	case <-time.After(200 * time.Millisecond):
	}
}

// The reply prefixes are configurable, and never reach the node's own
// subjects.
func TestReplyPrefixes(t *testing.T) {
	cfg := testConfig(t)
	cfg.ReplyPrefixes = []string{"_INBOX.", "_INBOX_alice."}
	n := startNode(t, cfg)
	alice := connect(t, n, nats.CustomInboxPrefix("_INBOX_alice"))
	if r := request(t, alice, SubjectCheck, `{"limiter":"api","key":"a"}`); r.code != 0 {
		t.Fatalf("custom inbox: %d %s", r.code, r.desc)
	}
	bob := connect(t, n, nats.CustomInboxPrefix("_INBOX_bob"))
	if _, err := bob.Request(SubjectCheck, []byte(`{"limiter":"api","key":"a"}`), 300*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("inbox outside reply_prefixes: %v, want a timeout (no reply)", err)
	}
	for _, bad := range [][]string{{"_FLUX."}, {"_"}, {"$KV.flux."}, {"$"}, {"flux.v1."}, {"_INBOX.*"}, {"_INBOX"}, {""}} {
		cfg := testConfig(t)
		cfg.ReplyPrefixes = bad
		if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "reply_prefixes") {
			t.Errorf("reply_prefixes %q: %v, want refused", bad, err)
		}
	}
}

// Costs written as integral floats are integers; fractions are refused.
func TestCostAsFloat(t *testing.T) {
	n := startNode(t, testConfig(t))
	nc := connect(t, n)
	for _, c := range []struct {
		cost      string
		code      int
		remaining int64
	}{{"1.0", 0, 20}, {"1e0", 0, 19}, {"2.0E0", 0, 17}, {"1.5", 400, 0}} {
		r := request(t, nc, SubjectCheck, `{"limiter":"api","key":"f","cost":`+c.cost+`}`)
		if r.code != c.code {
			t.Fatalf("cost %s: code %d %s, want %d", c.cost, r.code, r.data, c.code)
		}
		if c.code != 0 {
			if d := decodeDecision(t, r.data); d.Error == nil || d.Error.Reason != "invalid_cost" {
				t.Fatalf("cost %s: %s, want invalid_cost", c.cost, r.data)
			}
			continue
		}
		if d := decodeDecision(t, r.data); !*d.Allowed || *d.Remaining != c.remaining {
			t.Fatalf("cost %s: %s, want remaining %d", c.cost, r.data, c.remaining)
		}
	}
}
