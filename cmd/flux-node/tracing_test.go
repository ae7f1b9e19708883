package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/node"
	"github.com/fluxlimiter/flux/protocol"
)

// collector is an OTLP/HTTP trace receiver: it keeps every span posted to
// /v1/traces with its resource's attributes.
type collector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	res   []map[string]string // resource attributes of each span
	bad   error
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.URL.Path != "/v1/traces" {
		err = errors.New("POST to " + r.URL.Path)
	}
	if err != nil {
		c.bad = err
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, rs := range req.ResourceSpans {
		attrs := map[string]string{}
		for _, kv := range rs.GetResource().GetAttributes() {
			attrs[kv.Key] = kv.Value.GetStringValue()
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				c.spans = append(c.spans, sp)
				c.res = append(c.res, attrs)
			}
		}
	}
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func TestTracesExportedOverOTLP(t *testing.T) {
	col := &collector{}
	srv := httptest.NewServer(col)
	defer srv.Close()

	dir := t.TempDir()
	logs, stop := startRun(t, "--nats-listen", "127.0.0.1:-1", "--http-listen", "", "--data-dir", dir,
		"--node-id", "traced-1", "--otlp-endpoint", srv.URL, "--trace-sample", "1")
	url := logs.find(t, `client_url=(\S+)`, 30*time.Second)
	logs.find(t, `msg=(tracing) `, time.Second)
	logs.find(t, `msg="(try a check)"`, 30*time.Second) // the service is registered

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc)
	for range 3 {
		if _, err := c.Check(t.Context(), node.DefaultLimiterName, "alice", 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CheckBatch(t.Context(), []client.Request{{Limiter: node.DefaultLimiterName, Key: "bob", Cost: 1}}); err != nil {
		t.Fatal(err)
	}
	// Stopping flushes what the batching processor still holds.
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	col.mu.Lock()
	defer col.mu.Unlock()
	if col.bad != nil {
		t.Fatalf("the collector got a bad export: %v", col.bad)
	}
	names := map[string]int{}
	for i, sp := range col.spans {
		names[sp.Name]++
		if got := col.res[i]["service.name"]; got != "flux-node" {
			t.Errorf("span %q: service.name %q, want flux-node", sp.Name, got)
		}
		if got := col.res[i]["service.instance.id"]; got != "traced-1" {
			t.Errorf("span %q: service.instance.id %q, want traced-1", sp.Name, got)
		}
		if sp.Kind != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("span %q has kind %v, want server", sp.Name, sp.Kind)
		}
		var limiter string
		for _, kv := range sp.Attributes {
			if kv.Key == "ratelimit.limiter" {
				limiter = kv.Value.GetStringValue()
			}
		}
		if sp.Name == protocol.SubjectCheck && limiter != node.DefaultLimiterName {
			t.Errorf("check span's ratelimit.limiter = %q, want %q", limiter, node.DefaultLimiterName)
		}
	}
	if names[protocol.SubjectCheck] != 3 || names[protocol.SubjectCheckBatch] != 1 {
		t.Fatalf("exported spans %v, want 3 %s and 1 %s", names, protocol.SubjectCheck, protocol.SubjectCheckBatch)
	}
}

// The standard OpenTelemetry variables are enough to turn tracing on.
func TestTracesExportedFromEnv(t *testing.T) {
	col := &collector{}
	srv := httptest.NewServer(col)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)

	logs, stop := startRun(t, "--nats-listen", "127.0.0.1:-1", "--http-listen", "", "--data-dir", t.TempDir(), "--trace-sample", "1")
	url := logs.find(t, `client_url=(\S+)`, 30*time.Second)
	logs.find(t, `msg="(try a check)"`, 30*time.Second)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := client.New(nc).Check(t.Context(), node.DefaultLimiterName, "alice", 1); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.bad != nil || len(col.spans) != 1 || col.spans[0].Name != protocol.SubjectCheck {
		t.Fatalf("exported %d spans (bad export: %v), want one %s", len(col.spans), col.bad, protocol.SubjectCheck)
	}
}

func TestTraceFlagsValidated(t *testing.T) {
	for _, args := range [][]string{
		{"--trace-sample", "1.5"},
		{"--trace-sample", "-0.1"},
		{"--otlp-endpoint", "ftp://127.0.0.1:4318"},
		{"--otlp-endpoint", "127.0.0.1:4318"},
	} {
		var out, errOut bytes.Buffer
		err := run(t.Context(), append([]string{"--nats-listen", "127.0.0.1:-1", "--http-listen", "", "--data-dir", t.TempDir()}, args...), &out, &errOut)
		if !errors.Is(err, node.ErrInvalidConfig) {
			t.Errorf("%v: run = %v, want an invalid config error", args, err)
		}
	}
}
