package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for the server's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func TestServer(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	var out syncBuffer
	go func() { done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-rate", "1", "-burst", "2"}, &out, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	get := func(method, path string) *http.Response {
		req, _ := http.NewRequestWithContext(t.Context(), method, "http://"+addr+path, nil)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
		return r
	}
	var codes []int
	for range 4 {
		codes = append(codes, get("GET", "/hello").StatusCode)
	}
	if codes[0] != 200 || codes[2] != 200 || codes[3] != 429 {
		t.Fatalf("codes %v", codes)
	}
	r := get("GET", "/hello")
	if r.Header.Get("RateLimit-Policy") != `"api";q=3;w=3` || r.Header.Get("Retry-After") == "" {
		t.Fatalf("headers %v", r.Header)
	}
	if r := get("POST", "/login"); r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("RateLimit-Policy"), `"login";q=3;w=60`) {
		t.Fatalf("login: %d %v", r.StatusCode, r.Header)
	}
	if r := get("GET", "/healthz"); r.StatusCode != 200 || r.Header.Get("RateLimit") != "" {
		t.Fatalf("healthz: %d %v", r.StatusCode, r.Header)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+"/metrics", nil)
	mr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mr.Body)
	mr.Body.Close()
	for _, want := range []string{
		`flux_decisions_total{decision="allowed",limiter="api"} 3`,
		`flux_decisions_total{decision="denied",limiter="api"} 2`,
		`flux_decisions_total{decision="allowed",limiter="login"} 1`,
		`flux_keys{limiter="api"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
}
