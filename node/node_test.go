package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux"
)

func TestReload(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limiters["api"] = LimiterConfig{Rate: 1, Burst: 20} // slow refill: state stays visible
	n := startNode(t, cfg)
	nc := connect(t, n)
	// Use 2 of api's 21 for key k.
	start := time.Now()
	for range 2 {
		request(t, nc, SubjectCheck, `{"limiter":"api","key":"k"}`)
	}
	apiBefore, _ := n.Limiter("api")

	next := cfg
	next.Limiters = map[string]LimiterConfig{
		"api":   {Rate: 1, Burst: 4}, // capacity 21 -> 5
		"fresh": {Rate: 5, Burst: 1},
	}
	if err := n.Reload(next); err != nil {
		t.Fatal(err)
	}
	r := request(t, nc, SubjectLimiters, "")
	want := `{"limiters":[{"name":"api","algorithm":"gcra","rate":1,"burst":4,"capacity":5},{"name":"fresh","algorithm":"gcra","rate":5,"burst":1,"capacity":2}]}`
	if string(r.data) != want {
		t.Fatalf("after reload limiters = %s\nwant %s", r.data, want)
	}
	apiAfter, _ := n.Limiter("api")
	if apiAfter != apiBefore {
		t.Fatal("reload replaced the api limiter instead of re-basing it")
	}
	// State survived and was re-based: k keeps the 2 it used.
	d := decodeDecision(t, request(t, nc, SubjectCheck, `{"limiter":"api","key":"k","cost":0}`).data)
	if *d.Limit != 5 || (*d.Remaining != 3 && time.Since(start) < 900*time.Millisecond) {
		t.Fatalf("after reload k = %s; want limit 5, remaining 3", jsonOf(d))
	}
	// A new key has the full new capacity.
	d = decodeDecision(t, request(t, nc, SubjectCheck, `{"limiter":"api","key":"new","cost":0}`).data)
	if *d.Limit != 5 || *d.Remaining != 5 {
		t.Fatalf("fresh key = %s; want limit 5 remaining 5", jsonOf(d))
	}
	if r := request(t, nc, SubjectCheck, `{"limiter":"slow","key":"k"}`); r.code != 404 {
		t.Fatalf("removed limiter answered %d %s, want 404", r.code, r.data)
	}
	if r := request(t, nc, SubjectCheck, `{"limiter":"fresh","key":"k"}`); r.code != 0 {
		t.Fatalf("added limiter answered %d %s", r.code, r.desc)
	}

	// An invalid config is refused and the running one stays.
	bad := next
	bad.Limiters = map[string]LimiterConfig{"api": {Rate: -1}}
	if err := n.Reload(bad); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("invalid reload: err = %v, want ErrInvalidConfig", err)
	}
	if r := request(t, nc, SubjectLimiters, ""); string(r.data) != want {
		t.Fatalf("after refused reload limiters = %s", r.data)
	}
	if got := n.Config().Limiters["api"]; got.Burst != 4 {
		t.Fatalf("Config() after refused reload: api = %+v", got)
	}
}

func TestAdminHTTP(t *testing.T) {
	n := startNode(t, testConfig(t))
	nc := connect(t, n)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + n.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	for range 3 {
		request(t, nc, SubjectCheck, `{"limiter":"slow","key":"m"}`)
	}
	request(t, nc, SubjectCheck, `{"limiter":"nope","key":"m"}`)
	request(t, nc, SubjectCheckBatch, `{"requests":[{"limiter":"api","key":"a"},{"limiter":"api","key":"b"}]}`)
	_, body := get("/metrics")
	for _, want := range []string{
		`flux_decisions_total{decision="allowed",limiter="slow"} 1`,
		`flux_decisions_total{decision="denied",limiter="slow"} 2`,
		`flux_decisions_total{decision="allowed",limiter="api"} 2`,
		`flux_errors_total{kind="404",limiter=""} 1`,
		`flux_request_duration_seconds_count{endpoint="check"} 4`,
		`flux_request_duration_seconds_count{endpoint="check_batch"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, `"m"`) || strings.Contains(body, "nope") {
		t.Error("/metrics carries a client key or an unknown limiter name as a label")
	}
}

func TestShutdownDrainsInFlight(t *testing.T) {
	cfg := testConfig(t)
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const total = 2000
	replies := make(chan *nats.Msg, total)
	inbox := nats.NewInbox()
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for i := range total {
		if err := nc.PublishRequest(SubjectCheck, inbox, fmt.Appendf(nil, `{"limiter":"api","key":"k%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil { // the server has routed them all
		t.Fatal(err)
	}
	start := time.Now()
	if err := n.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Shutdown took %v", el)
	}
	if n.Ready() == nil {
		t.Fatal("Ready after Shutdown")
	}
	// Every request routed before Shutdown was answered. The embedded
	// server is gone now, so the replies were delivered before it stopped.
	got := 0
	timeout := time.After(5 * time.Second)
	for got < total {
		select {
		case m := <-replies:
			if m.Header.Get("Nats-Service-Error-Code") != "" {
				t.Fatalf("in-flight request answered with error %q", m.Header.Get("Nats-Service-Error"))
			}
			got++
		case <-timeout:
			t.Fatalf("%d of %d in-flight requests answered", got, total)
		}
	}
	// Idempotent, and everything refuses politely afterwards.
	if err := n.Shutdown(t.Context()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := n.Start(t.Context()); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Start after Shutdown: %v", err)
	}
	if err := n.Reload(cfg); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Reload after Shutdown: %v", err)
	}
	l, _ := n.Limiter("api")
	if _, err := l.Check(t.Context(), "x"); !errors.Is(err, flux.ErrClosed) {
		t.Fatalf("limiter after Shutdown: %v, want ErrClosed", err)
	}
}

func TestConcurrentShutdown(t *testing.T) {
	n, err := New(testConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := n.Shutdown(t.Context()); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		})
	}
	wg.Wait()
}

func TestShutdownWithoutStart(t *testing.T) {
	n, err := New(testConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n.ClientURL() != "" || n.HTTPAddr() != "" {
		t.Fatal("addresses set without Start")
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	for _, tt := range []struct {
		flag string
		set  func(*Config)
	}{
		{"--nats-listen", func(c *Config) { c.NATSListen = busy }},
		{"--http-listen", func(c *Config) { c.HTTPListen = busy }},
	} {
		cfg := testConfig(t)
		tt.set(&cfg)
		n, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = n.Start(t.Context())
		var le *ListenError
		if !errors.As(err, &le) || le.Flag != tt.flag || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("port in use for %s: err = %v", tt.flag, err)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("%s: failing took %v, want at once", tt.flag, el)
		}
		if err := n.Shutdown(t.Context()); err != nil {
			t.Error(err)
		}
	}
}

func TestExternalNATS(t *testing.T) {
	// Two nodes join one NATS server with NATSURL. Both serve the same
	// subjects in one queue group. (A node's embedded server gives other
	// connections client permissions only: nodes share it through routes,
	// not as clients.)
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("NATS server did not start")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	cfg := testConfig(t)
	cfg.NATSURL = s.ClientURL()
	a := startNode(t, cfg)
	cfg = testConfig(t)
	cfg.NATSURL = s.ClientURL()
	cfg.NodeID = "b"
	b := startNode(t, cfg)
	if b.ClientURL() != a.ClientURL() {
		t.Fatalf("b.ClientURL() = %q, want %q", b.ClientURL(), a.ClientURL())
	}
	if err := b.Ready(); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, a)
	var ping struct{ Metadata map[string]string }
	ids := map[string]bool{}
	msgs := make(chan *nats.Msg, 8)
	sub, err := nc.ChanSubscribe(nats.NewInbox(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.PING.flux", sub.Subject, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both nodes to answer PING", 5*time.Second, func() bool {
		select {
		case m := <-msgs:
			if err := json.Unmarshal(m.Data, &ping); err == nil {
				ids[ping.Metadata["node_id"]] = true
			}
		default:
		}
		return ids["test"] && ids["b"]
	})
}
