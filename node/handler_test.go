package node

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"time"
)

func TestCheckReply(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limiters["lazy"] = LimiterConfig{Rate: 0.01, Burst: 20} // refills too slowly to interfere
	n := startNode(t, cfg)
	nc := connect(t, n)

	r := request(t, nc, SubjectCheck, `{"limiter":"api","key":"alice","cost":1}`)
	if r.code != 0 {
		t.Fatalf("error reply %d %s", r.code, r.desc)
	}
	d := decodeDecision(t, r.data)
	if !d.complete() {
		t.Fatalf("reply %s lacks fields", r.data)
	}
	if !*d.Allowed || *d.Limit != 21 || *d.Remaining != 20 || *d.RetryAfterNS != 0 || *d.ResetAfterNS != 10_000_000 || *d.DelayNS != 0 {
		t.Fatalf("first check of a fresh key = %s, want allowed, limit 21, remaining 20, reset 10ms", r.data)
	}

	// cost is optional (default 1); cost 0 peeks without consuming.
	for want := int64(20); want >= 18; want-- {
		r = request(t, nc, SubjectCheck, `{"limiter":"lazy","key":"alice"}`)
		if d := decodeDecision(t, r.data); !*d.Allowed || *d.Remaining != want {
			t.Fatalf("check = %s, want remaining %d", r.data, want)
		}
	}
	for range 3 {
		r = request(t, nc, SubjectCheck, `{"limiter":"lazy","key":"alice","cost":0}`)
		if d := decodeDecision(t, r.data); !d.complete() || !*d.Allowed || *d.Remaining != 18 {
			t.Fatalf("peek = %s, want allowed with remaining 18", r.data)
		}
	}
	r = request(t, nc, SubjectCheck, `{"limiter":"lazy","key":"alice","cost":18}`)
	if d := decodeDecision(t, r.data); !*d.Allowed || *d.Remaining != 0 {
		t.Fatalf("cost 18 = %s, want allowed with remaining 0", r.data)
	}
	if l, _ := n.Limiter("lazy"); l.Len() != 1 {
		t.Fatalf("limiter holds %d keys, want 1", l.Len())
	}
}

func TestDenialIsAReply(t *testing.T) {
	n := startNode(t, testConfig(t))
	nc := connect(t, n)
	first := request(t, nc, SubjectCheck, `{"limiter":"slow","key":"bob"}`)
	if d := decodeDecision(t, first.data); first.code != 0 || !*d.Allowed {
		t.Fatalf("first check = %d %s, want allowed", first.code, first.data)
	}
	r := request(t, nc, SubjectCheck, `{"limiter":"slow","key":"bob"}`)
	if r.code != 0 {
		t.Fatalf("denial came as error %d %s", r.code, r.desc)
	}
	d := decodeDecision(t, r.data)
	if !d.complete() || *d.Allowed || *d.Remaining != 0 || *d.RetryAfterNS <= 0 || *d.RetryAfterNS > int64(time.Second) || *d.Limit != 1 {
		t.Fatalf("second check = %s, want denied with 0 < retry_after_ns ≤ 1s", r.data)
	}
}

func TestCheckErrors(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxKeyLen = 16
	cfg.MaxPayload = 2048
	testCheckErrors(t, startNode(t, cfg))
}

func testCheckErrors(t *testing.T, n *Node) {
	nc := connect(t, n)
	tests := []struct {
		name, body string
		code       int
		reason     string
	}{
		{"malformed JSON", `{"limiter":"api",`, 400, "malformed"},
		{"not an object", `[1,2]`, 400, "malformed"},
		{"empty body", ``, 400, "malformed"},
		{"missing key", `{"limiter":"api"}`, 400, "empty_key"},
		{"empty key", `{"limiter":"api","key":""}`, 400, "empty_key"},
		{"key not a string", `{"limiter":"api","key":12}`, 400, "invalid_request"},
		{"key too long", `{"limiter":"api","key":"` + strings.Repeat("k", 17) + `"}`, 400, "key_too_long"},
		{"negative cost", `{"limiter":"api","key":"a","cost":-1}`, 400, "invalid_cost"},
		{"fractional cost", `{"limiter":"api","key":"a","cost":1.5}`, 400, "invalid_cost"},
		{"cost as string", `{"limiter":"api","key":"a","cost":"2"}`, 400, "invalid_cost"},
		{"cost above capacity", `{"limiter":"api","key":"a","cost":22}`, 400, "cost_exceeds_capacity"},
		{"missing limiter", `{"key":"a"}`, 400, "invalid_request"},
		{"unknown limiter", `{"limiter":"nope","key":"a"}`, 404, "unknown_limiter"},
		{"payload too large", `{"limiter":"api","key":"a","pad":"` + strings.Repeat("x", 2048) + `"}`, 413, "too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := request(t, nc, SubjectCheck, tt.body)
			if r.code != tt.code {
				t.Fatalf("code = %d (%s), want %d", r.code, r.desc, tt.code)
			}
			if r.desc == "" {
				t.Fatal("no Nats-Service-Error description")
			}
			d := decodeDecision(t, r.data)
			if d.Error == nil || d.Error.Code != tt.code || d.Error.Reason != tt.reason || d.Error.Description != r.desc {
				t.Fatalf("body = %s, want error object with code %d reason %s", r.data, tt.code, tt.reason)
			}
		})
	}
	// Nothing above was admitted.
	if l, _ := n.Limiter("api"); l.Len() != 0 {
		t.Fatalf("errors consumed capacity: %d keys held", l.Len())
	}
}

func TestBatchMixed(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxKeyLen = 16
	testBatchMixed(t, startNode(t, cfg))
}

func testBatchMixed(t *testing.T, n *Node) {
	nc := connect(t, n)
	body := `{"requests":[
		{"limiter":"api","key":"a"},
		{"limiter":"nope","key":"a"},
		{"limiter":"slow","key":"s"},
		{"limiter":"api","key":""},
		{"limiter":"slow","key":"s"},
		{"limiter":"api","key":"a","cost":5},
		{"limiter":"api","key":"b","cost":99},
		{"limiter":"api","key":"` + strings.Repeat("k", 17) + `"},
		{"limiter":"api","key":"a","cost":-2},
		{"key":"a"},
		{"limiter":"api","key":"a","cost":0}
	]}`
	r := request(t, nc, SubjectCheckBatch, body)
	if r.code != 0 {
		t.Fatalf("batch failed whole: %d %s", r.code, r.desc)
	}
	var reply struct{ Results []decision }
	if err := json.Unmarshal(r.data, &reply); err != nil {
		t.Fatalf("%s: %v", r.data, err)
	}
	if len(reply.Results) != 11 {
		t.Fatalf("%d results for 11 requests: %s", len(reply.Results), r.data)
	}
	type want struct {
		code      int
		reason    string
		allowed   bool
		remaining int64
	}
	wants := []want{
		{allowed: true, remaining: 20},
		{code: 404, reason: "unknown_limiter"},
		{allowed: true, remaining: 0},
		{code: 400, reason: "empty_key"},
		{allowed: false, remaining: 0},
		{allowed: true, remaining: 15},
		{code: 400, reason: "cost_exceeds_capacity"},
		{code: 400, reason: "key_too_long"},
		{code: 400, reason: "invalid_cost"},
		{code: 400, reason: "invalid_request"},
		{allowed: true, remaining: 15},
	}
	for i, w := range wants {
		got := reply.Results[i]
		if w.code != 0 {
			if got.Error == nil || got.Error.Code != w.code || got.Error.Reason != w.reason || got.Error.Description == "" || got.Allowed != nil {
				t.Errorf("result %d = %+v, want error %d %s only", i, got, w.code, w.reason)
			}
			continue
		}
		if got.Error != nil || !got.complete() || *got.Allowed != w.allowed || *got.Remaining != w.remaining {
			t.Errorf("result %d: %s, want allowed=%v remaining=%d", i, jsonOf(got), w.allowed, w.remaining)
		}
	}
}

func jsonOf(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestBatchBounds(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBatch = 5
	cfg.MaxPayload = 4096
	testBatchBounds(t, startNode(t, cfg))
}

func testBatchBounds(t *testing.T, n *Node) {
	nc := connect(t, n)
	items := func(k int) string {
		var b strings.Builder
		b.WriteString(`{"requests":[`)
		for i := range k {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"limiter":"api","key":"k%d"}`, i)
		}
		b.WriteString("]}")
		return b.String()
	}
	if r := request(t, nc, SubjectCheckBatch, items(5)); r.code != 0 {
		t.Fatalf("5 items (the max): %d %s", r.code, r.desc)
	}
	r := request(t, nc, SubjectCheckBatch, items(6))
	if d := decodeDecision(t, r.data); r.code != 413 || d.Error == nil || d.Error.Reason != "too_large" {
		t.Fatalf("6 items: %d %s, want 413 too_large", r.code, r.data)
	}
	r = request(t, nc, SubjectCheckBatch, `{"requests":[],"pad":"`+strings.Repeat("x", 5000)+`"}`)
	if r.code != 413 {
		t.Fatalf("oversized payload: %d %s, want 413", r.code, r.desc)
	}
	r = request(t, nc, SubjectCheckBatch, `{"requests":[]}`)
	if r.code != 0 || string(r.data) != `{"results":[]}` {
		t.Fatalf("empty batch: %d %s", r.code, r.data)
	}
	for _, bad := range []string{`{"requests":`, `{}`, `{"requests":{}}`, `nope`} {
		if r := request(t, nc, SubjectCheckBatch, bad); r.code != 400 {
			t.Errorf("batch %q: code %d, want 400", bad, r.code)
		}
	}
	// None of the refused batches consumed anything.
	if l, _ := n.Limiter("api"); l.Len() != 5 {
		t.Fatalf("limiter holds %d keys, want the 5 of the accepted batch", l.Len())
	}
}

// TestDefaultPayloadBound sends a request just above the default 1 MiB
// bound: it must reach the node (the embedded server's max_payload is
// larger) and be answered 413.
func TestDefaultPayloadBound(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxPayload = DefaultMaxPayload
	n := startNode(t, cfg)
	nc := connect(t, n)
	body := `{"requests":[],"pad":"` + strings.Repeat("x", DefaultMaxPayload) + `"}`
	if r := request(t, nc, SubjectCheckBatch, body); r.code != 413 {
		t.Fatalf("%d-byte batch: code %d, want 413", len(body), r.code)
	}
	if r := request(t, nc, SubjectCheck, `{"limiter":"api","key":"k","pad":"`+strings.Repeat("x", DefaultMaxPayload)+`"}`); r.code != 413 {
		t.Fatalf("oversized check: code %d, want 413", r.code)
	}
}

func TestLimitersEndpoint(t *testing.T) {
	n := startNode(t, testConfig(t))
	nc := connect(t, n)
	r := request(t, nc, SubjectLimiters, ``)
	want := `{"limiters":[{"name":"api","algorithm":"gcra","rate":100,"burst":20,"capacity":21},{"name":"slow","algorithm":"gcra","rate":1,"burst":0,"capacity":1}]}`
	if r.code != 0 || string(r.data) != want {
		t.Fatalf("limiters = %d %s\nwant %s", r.code, r.data, want)
	}
}

func TestServiceDiscovery(t *testing.T) {
	n := startNode(t, testConfig(t))
	nc := connect(t, n)
	var ping struct {
		Name, Version, Type string
		Metadata            map[string]string
	}
	if err := json.Unmarshal(request(t, nc, "$SRV.PING.flux", "").data, &ping); err != nil {
		t.Fatal(err)
	}
	if ping.Name != "flux" || ping.Version != Version || ping.Metadata["node_id"] != "test" {
		t.Fatalf("ping = %+v", ping)
	}
	var info struct {
		Endpoints []struct{ Name, Subject string }
	}
	if err := json.Unmarshal(request(t, nc, "$SRV.INFO.flux", "").data, &info); err != nil {
		t.Fatal(err)
	}
	subjects := map[string]int{}
	for _, e := range info.Endpoints {
		subjects[e.Subject]++
	}
	if subjects[SubjectCheck] != 1 || subjects[SubjectCheckBatch] != 1 || subjects[SubjectLimiters] != 1 {
		t.Fatalf("endpoints by subject = %v, want one each", subjects)
	}
	var stats struct {
		Endpoints []struct {
			Name string
			Data struct {
				Limiters map[string]struct{ Keys int }
			}
		}
	}
	request(t, nc, SubjectCheck, `{"limiter":"api","key":"x"}`)
	if err := json.Unmarshal(request(t, nc, "$SRV.STATS.flux", "").data, &stats); err != nil {
		t.Fatal(err)
	}
	if len(stats.Endpoints) == 0 || stats.Endpoints[0].Data.Limiters["api"].Keys != 1 {
		t.Fatalf("stats = %+v, want api holding 1 key", stats)
	}
}

// TestCoalesce has a check worker answer several requests taken at once,
// as from a busy door: one decider call per limiter decides the valid
// ones in order, and every request gets its own reply.
func TestCoalesce(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limiters["lazy"] = LimiterConfig{Rate: 0.01, Burst: 4}
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	bodies := []string{
		`{"limiter":"lazy","key":"k"}`,
		`{"limiter":"nope","key":"k"}`,
		`{"limiter":"lazy","key":"k","cost":2}`,
		`not json`,
		`{"limiter":"slow","key":"k"}`,
		`{"limiter":"lazy","key":"k","cost":3}`,
		`{"limiter":"lazy","key":"k","cost":0}`,
	}
	type want struct {
		code      int
		allowed   bool
		remaining int64
	}
	wants := []want{{0, true, 4}, {404, false, 0}, {0, true, 2}, {400, false, 0}, {0, true, 0}, {0, false, 2}, {0, true, 2}}
	w, pub := pipelineOf(n, kindCheck)
	var msgs []*nats.Msg
	for i, b := range bodies {
		m := msg(kindCheck, []byte(b))
		m.Reply = fmt.Sprintf("_INBOX.%d", i)
		msgs = append(msgs, m)
	}
	w.serve(msgs)
	if pub.n != len(bodies) {
		t.Fatalf("%d replies to %d requests", pub.n, len(bodies))
	}
	for i, w := range wants {
		r := pub.replies[i]
		if r.subject != fmt.Sprintf("_INBOX.%d", i) {
			t.Fatalf("reply %d went to %s", i, r.subject)
		}
		if w.code != 0 {
			if r.code != fmt.Sprint(w.code) {
				t.Errorf("reply %d: code %q, want %d (%s)", i, r.code, w.code, r.body)
			}
			continue
		}
		d := decodeDecision(t, r.body)
		if r.code != "" || !d.complete() || *d.Allowed != w.allowed || *d.Remaining != w.remaining {
			t.Errorf("reply %d = %s %s, want allowed=%v remaining=%d", i, r.code, r.body, w.allowed, w.remaining)
		}
	}
	for _, h := range w.slots {
		for _, it := range h.items[:cap(h.items)] {
			if it.Key != "" {
				t.Fatal("worker kept a reference to a payload")
			}
		}
	}
}

func TestUnavailable(t *testing.T) {
	cfg := testConfig(t)
	cfg.Shards, cfg.MaxKeys = 1, 1 // one key held at a time
	cfg.Limiters["stuck"] = LimiterConfig{Rate: 0.001}
	n := startNode(t, cfg)
	{
		nc := connect(t, n)
		// "stuck" holds key a (throttled for 1000 s); a new key finds the
		// key table full: 503 overloaded, as a single check and in a batch.
		if r := request(t, nc, SubjectCheck, `{"limiter":"stuck","key":"a"}`); r.code != 0 {
			t.Fatalf("first key: %d %s", r.code, r.desc)
		}
		r := request(t, nc, SubjectCheck, `{"limiter":"stuck","key":"b"}`)
		if d := decodeDecision(t, r.data); r.code != 503 || d.Error == nil || d.Error.Reason != "overloaded" {
			t.Fatalf("full key table: %d %s, want 503 overloaded", r.code, r.data)
		}
		r = request(t, nc, SubjectCheckBatch, `{"requests":[{"limiter":"stuck","key":"a"},{"limiter":"stuck","key":"c"}]}`)
		var reply struct{ Results []decision }
		if err := json.Unmarshal(r.data, &reply); err != nil || r.code != 0 || len(reply.Results) != 2 {
			t.Fatalf("batch: %d %s", r.code, r.data)
		}
		if a, c := reply.Results[0], reply.Results[1]; a.Error != nil || *a.Allowed || c.Error == nil || c.Error.Code != 503 {
			t.Fatalf("batch results = %s, want a denied and c 503", r.data)
		}
		// A closed limiter (as during shutdown): 503 shutting_down.
		l, _ := n.Limiter("api")
		l.Close()
		r = request(t, nc, SubjectCheck, `{"limiter":"api","key":"a"}`)
		if d := decodeDecision(t, r.data); r.code != 503 || d.Error == nil || d.Error.Reason != "shutting_down" {
			t.Fatalf("closed limiter: %d %s, want 503 shutting_down", r.code, r.data)
		}
		r = request(t, nc, SubjectCheckBatch, `{"requests":[{"limiter":"api","key":"a"},{"limiter":"stuck","key":"a"}]}`)
		reply.Results = nil
		if err := json.Unmarshal(r.data, &reply); err != nil || len(reply.Results) != 2 || reply.Results[0].Error == nil ||
			reply.Results[0].Error.Reason != "shutting_down" || reply.Results[1].Error != nil {
			t.Fatalf("batch with a closed limiter: %s", r.data)
		}
	}
}
