package load

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func TestHistQuantiles(t *testing.T) {
	var h Hist
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.Quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*1.02 {
			t.Errorf("Quantile(%v) = %v, want %v within 2%%", c.q, got, c.want)
		}
	}
	for v := int64(0); v < 1<<20; v = v*3/2 + 1 {
		if top := bucketTop(bucketOf(v)); top < v || (v >= subCount && float64(top-v) > float64(v)/subCount) {
			t.Fatalf("value %d: bucket top %d", v, top)
		}
	}
}

// fakeNode answers flux.v1.check and flux.v1.check_batch the way flux-node
// does, denying every key that ends in 7 and failing the limiter "nope".
func fakeNode(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	decide := func(item []byte) string {
		if bytes.Contains(item, []byte(`"limiter":"nope"`)) {
			return `{"error":{"code":404,"description":"unknown limiter"}}`
		}
		if bytes.Contains(item, []byte(`7","cost"`)) {
			return `{"allowed":false,"limit":2,"remaining":0,"retry_after_ns":5,"reset_after_ns":9,"delay_ns":0}`
		}
		return `{"allowed":true,"limit":2,"remaining":1,"retry_after_ns":0,"reset_after_ns":9,"delay_ns":0}`
	}
	if _, err := nc.Subscribe(SubjectCheck, func(m *nats.Msg) {
		if bytes.Contains(m.Data, []byte(`"limiter":"nope"`)) {
			r := nats.NewMsg(m.Reply)
			r.Header.Set("Nats-Service-Error-Code", "404")
			r.Header.Set("Nats-Service-Error", "unknown limiter")
			_ = m.RespondMsg(r)
			return
		}
		_ = m.Respond([]byte(decide(m.Data)))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(SubjectCheckBatch, func(m *nats.Msg) {
		body := strings.TrimSuffix(strings.TrimPrefix(string(m.Data), `{"requests":[`), "]}")
		var out []string
		for item := range strings.SplitSeq(body, "},") {
			out = append(out, decide([]byte(item)))
		}
		_ = m.Respond([]byte(`{"results":[` + strings.Join(out, ",") + "]}"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s.ClientURL()
}

func TestNATSCounts(t *testing.T) {
	url := fakeNode(t)
	ctx := t.Context()
	for _, c := range []struct {
		name      string
		batch     int
		rate      float64
		limiter   string
		wantError bool
	}{
		{"single", 1, 0, "api", false},
		{"batch", 10, 0, "api", false},
		{"open loop", 1, 2000, "api", false},
		{"unknown limiter", 1, 0, "nope", true},
		{"unknown limiter batch", 5, 0, "nope", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := NATS{URL: url, Limiter: c.limiter}.Run(ctx, Config{
				Keys: 1000, Batch: c.batch, InFlight: 16, Conns: 2, Rate: c.rate,
				Duration: 200 * time.Millisecond, Timeout: 2 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res)
			if c.wantError {
				if res.Errors == 0 || res.Checks != 0 {
					t.Fatalf("errors %d, checks %d: want only errors", res.Errors, res.Checks)
				}
				return
			}
			if res.Errors != 0 {
				t.Fatalf("errors: %d (%s)", res.Errors, res.FirstError)
			}
			if res.Requests == 0 || res.Checks != res.Requests*uint64(c.batch) {
				t.Fatalf("requests %d, checks %d, batch %d", res.Requests, res.Checks, c.batch)
			}
			// Keys ending in 7 are denied: about a tenth.
			if f := float64(res.Denied) / float64(res.Checks); f < 0.05 || f > 0.15 {
				t.Fatalf("denied %d of %d", res.Denied, res.Checks)
			}
			if res.Latency.Count() != res.Requests {
				t.Fatalf("latencies %d, requests %d", res.Latency.Count(), res.Requests)
			}
			if c.rate > 0 {
				if n := float64(res.Requests); n < c.rate*0.2*0.5 || n > c.rate*0.2*1.5 {
					t.Fatalf("open loop at %v/s for 200ms sent %v requests", c.rate, n)
				}
			}
		})
	}
}

func TestGubernator(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a gubernator daemon")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	d, err := StartGubernator(ctx, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, batch := range []int{1, 10} {
		res, err := Gubernator{Addr: d.Addr, Name: "bench", Limit: 2, Duration: time.Hour}.Run(ctx, Config{
			Keys: 100, Batch: batch, InFlight: 8, Conns: 2, Duration: 300 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Log(res)
		if res.Errors != 0 || res.Requests == 0 || res.Checks != res.Requests*uint64(batch) {
			t.Fatalf("%+v", res)
		}
		// 100 keys with 2 hits each per hour: at most 200 checks are
		// admitted over both runs.
		if admitted := res.Checks - res.Denied; admitted > 200 {
			t.Fatalf("admitted %d of %d, want at most 200", admitted, res.Checks)
		}
	}
}

func TestRedis(t *testing.T) {
	u := os.Getenv("FLUX_REDIS_URL")
	if u == "" || testing.Short() {
		t.Skip("set FLUX_REDIS_URL (e.g. redis://127.0.0.1:6379/0) to run; the test uses database 15 of that server")
	}
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	pu.Path = "/15"
	prefix := fmt.Sprintf("fluxload-test-%d:", time.Now().UnixNano())
	for _, batch := range []int{1, 10} {
		// Capacity 3 per key and 100 keys, a refill every 100 s: at most
		// 300 checks are admitted over both runs (the keys expire within 5 minutes).
		res, err := Redis{URL: pu.String(), Prefix: prefix, Rate: 0.01, Burst: 2}.Run(t.Context(), Config{
			Keys: 100, Batch: batch, InFlight: 4, Duration: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Log(res)
		if res.Errors != 0 || res.Requests == 0 || res.Checks != res.Requests*uint64(batch) {
			t.Fatalf("%+v", res)
		}
		if res.Checks-res.Denied > 300 {
			t.Fatalf("admitted %d of %d, want at most 300", res.Checks-res.Denied, res.Checks)
		}
	}
}

func TestNATSSilentResponder(t *testing.T) {
	url := fakeNode(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe("silent", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := NATS{URL: url, Limiter: "api", Subject: "silent"}.Run(t.Context(), Config{
		Keys: 10, InFlight: 8, Conns: 2, Duration: 100 * time.Millisecond, Timeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("run took %v", d)
	}
	if res.Errors != 8 || res.Requests != 0 {
		t.Fatalf("errors %d, requests %d: want 8 unanswered", res.Errors, res.Requests)
	}
}
