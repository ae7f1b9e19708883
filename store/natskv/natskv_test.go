package natskv_test

import (
	"context"
	"encoding/base64"
	"errors"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/internal/storeenv"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/natskv"
	"github.com/fluxlimiter/flux/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// runServer starts an embedded nats-server with JetStream in a temporary
// directory, on a random loopback port, shut down at cleanup.
func runServer(tb testing.TB) *server.Server {
	tb.Helper()
	return runServerAt(tb, server.RANDOM_PORT, tb.TempDir())
}

// runServerAt starts an embedded nats-server on port with its JetStream
// data in dir.
func runServerAt(tb testing.TB, port int, dir string) *server.Server {
	tb.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: dir,
	})
	if err != nil {
		tb.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server not ready")
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// connect returns a JetStream context on a new connection to srv.
func connect(tb testing.TB, srv *server.Server, opts ...nats.Option) (jetstream.JetStream, *nats.Conn) {
	tb.Helper()
	nc, err := nats.Connect(srv.ClientURL(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js, nc
}

func newStore(tb testing.TB, js jetstream.JetStream, opts natskv.Options) *natskv.Store {
	tb.Helper()
	if opts.Bucket == "" {
		opts.Bucket = "fluxtest_" + storeenv.Suffix()
	}
	s, err := natskv.New(tb.Context(), js, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = js.DeleteKeyValue(ctx, opts.Bucket)
	})
	return s
}

func TestConformance(t *testing.T) {
	js, _ := connect(t, runServer(t))
	storetest.Run(t, func(t *testing.T) store.Store { return newStore(t, js, natskv.Options{}) })
}

// lastMsg returns the raw last message stored for a key of the state
// namespace.
func lastMsg(t *testing.T, js jetstream.JetStream, bucket, kind, limiter, key string) *jetstream.RawStreamMsg {
	t.Helper()
	st, err := js.Stream(t.Context(), "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter("$KV."+bucket+"."+kind+".>"))
	if err != nil {
		t.Fatal(err)
	}
	for subj := range info.State.Subjects {
		parts := strings.Split(subj, ".")
		if parts[len(parts)-2] == tok(limiter) && parts[len(parts)-1] == tok(key) {
			m, err := st.GetLastMsgForSubject(t.Context(), subj)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatalf("no message for %s %q %q among %v", kind, limiter, key, info.State.Subjects)
	return nil
}

func tok(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestPerKeyTTL: every write, the compare-and-set ones included, carries
// its own TTL; a monthly window and a second-long state coexist in one
// bucket, and expired keys disappear.
func TestPerKeyTTL(t *testing.T) {
	js, _ := connect(t, runServer(t))
	bucket := "fluxtest_" + storeenv.Suffix()
	s := newStore(t, js, natskv.Options{Bucket: bucket, Margin: -1})
	ctx := t.Context()
	now := time.Now()
	err := s.Save(ctx, "l", []store.Entry{
		{Key: "now", State: []byte("n"), IdleAt: now.UnixNano()},
		{Key: "month", State: []byte("m"), IdleAt: now.Add(31 * 24 * time.Hour).UnixNano()},
		{Key: "forever", State: []byte("f"), IdleAt: store.NoExpiry},
		{Key: "2262", State: []byte("f"), IdleAt: math.MaxInt64 - 1}, // beyond store.MaxTTL
	})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"now": "1s", "forever": "never", "2262": "never"} {
		if got := lastMsg(t, js, bucket, "s", "l", key).Header.Get("Nats-TTL"); got != want {
			t.Errorf("Nats-TTL of %q = %q, want %q", key, got, want)
		}
	}
	if got := lastMsg(t, js, bucket, "s", "l", "month").Header.Get("Nats-TTL"); got != "2678400s" && got != "2678399s" {
		t.Errorf("Nats-TTL of the monthly key = %q, want 31 days", got)
	}
	g, _ := algorithm.NewGCRA(0.01, 0) // T = 100 s
	for range 2 {                      // the second check updates by compare-and-set
		if _, err := s.CheckGCRA(ctx, "l", "g", g, now.UnixNano(), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CheckGCRA(ctx, "l", "g", g, now.UnixNano(), 1); err != nil {
		t.Fatal(err)
	}
	if got := lastMsg(t, js, bucket, "g", "l", "g").Header.Get("Nats-TTL"); got != "100s" {
		t.Errorf("Nats-TTL of the GCRA record = %q, want 100s", got)
	}
	u := func(cur store.Entry, found bool) (store.Entry, bool) {
		return store.Entry{State: []byte("u"), IdleAt: now.Add(time.Hour).UnixNano()}, true
	}
	if err := s.Update(ctx, "l", "month", u); err != nil {
		t.Fatal(err)
	}
	if got := lastMsg(t, js, bucket, "s", "l", "month").Header.Get("Nats-TTL"); got != "3600s" && got != "3599s" {
		t.Errorf("Nats-TTL after Update = %q, want 3600s (an update keeps a TTL)", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, ok, err := s.Load(ctx, "l", "now")
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a key with a 1 s TTL still there after 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("1 s TTL expired after %v", time.Since(now))
	if _, ok, _ := s.Load(ctx, "l", "forever"); !ok {
		t.Fatal("the NoExpiry key expired")
	}
	// An expired key (its subject now holds a marker) is created again by
	// compare-and-set.
	if err := s.Update(ctx, "l", "now", u); err != nil {
		t.Fatalf("Update of an expired key: %v", err)
	}
	if e, ok, _ := s.Load(ctx, "l", "now"); !ok || string(e.State) != "u" {
		t.Fatalf("after Update of an expired key: %q, %v", e.State, ok)
	}
}

// TestAtomicTwoConnections: two stores on two connections hammer one key at
// the same manual instants; together they admit exactly what
// algorithm.GCRA admits.
func TestAtomicTwoConnections(t *testing.T) {
	srv := runServer(t)
	jsA, _ := connect(t, srv)
	jsB, _ := connect(t, srv)
	bucket := "fluxtest_" + storeenv.Suffix()
	sa := newStore(t, jsA, natskv.Options{Bucket: bucket})
	sb := newStore(t, jsB, natskv.Options{Bucket: bucket})
	g, _ := algorithm.NewGCRA(100, 9) // capacity 10, T = 10 ms
	storetest.SharedExact(t, []store.AtomicGCRA{sa, sb}, g, 4, 5, 3, 4)
}

// TestServerDown: once the server is gone, calls fail within their
// deadline (the client keeps trying to reconnect meanwhile); when it is
// back, with its data, calls succeed again.
func TestServerDown(t *testing.T) {
	dir := t.TempDir()
	srv := runServerAt(t, server.RANDOM_PORT, dir)
	port := srv.Addr().(*net.TCPAddr).Port
	js, _ := connect(t, srv, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	s, err := natskv.New(t.Context(), js, natskv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Save(t.Context(), "l", []store.Entry{{Key: "k", State: []byte("x"), IdleAt: store.NoExpiry}}); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	storetest.Unreachable(t, s, 300*time.Millisecond, 800*time.Millisecond)

	runServerAt(t, port, dir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		e, ok, err := s.Load(ctx, "l", "k")
		cancel()
		if err == nil {
			if !ok || string(e.State) != "x" {
				t.Fatalf("after the restart: %q, %v; want the state saved before", e.State, ok)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store still failing 10 s after the server came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.Save(t.Context(), "l", []store.Entry{{Key: "k", State: []byte("z"), IdleAt: store.NoExpiry}}); err != nil {
		t.Fatalf("Save after the restart: %v", err)
	}
}

func TestOpen(t *testing.T) {
	srv := runServer(t)
	bucket := "fluxtest_" + storeenv.Suffix()
	s, err := natskv.Open(t.Context(), srv.ClientURL(), natskv.Options{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(t.Context(), "l", []store.Entry{{Key: "k", State: []byte("x"), IdleAt: store.NoExpiry}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Load(t.Context(), "l", "k"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Load after Close = %v", err)
	}
	// The data is in the server: a new store on the same bucket sees it.
	s2, err := natskv.Open(t.Context(), srv.ClientURL(), natskv.Options{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if e, ok, err := s2.Load(t.Context(), "l", "k"); err != nil || !ok || string(e.State) != "x" {
		t.Fatalf("reopened: %q, %v, %v", e.State, ok, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := natskv.Open(ctx, "nats://127.0.0.1:1", natskv.Options{}); err == nil {
		t.Fatal("Open of a closed port returned nil")
	}
}

// TestLongKeys: keys too long to encode are hashed, and still distinct.
func TestLongKeys(t *testing.T) {
	js, _ := connect(t, runServer(t))
	s := newStore(t, js, natskv.Options{})
	a, b := strings.Repeat("a", 5000), strings.Repeat("a", 4999)+"b"
	err := s.Save(t.Context(), "l", []store.Entry{
		{Key: a, State: []byte("A"), IdleAt: store.NoExpiry},
		{Key: b, State: []byte("B"), IdleAt: store.NoExpiry},
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{a: "A", b: "B"} {
		if e, ok, err := s.Load(t.Context(), "l", k); err != nil || !ok || string(e.State) != want || e.Key != k {
			t.Fatalf("long key: %q, %v, %v", e.State, ok, err)
		}
	}
}
