package bus

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	flux "github.com/fluxlimiter/flux"
)

// natsServer starts an embedded server on a random port with a small
// payload limit, so that chunking is exercised by small messages.
func natsServer(t *testing.T, maxPayload int32) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true, MaxPayload: maxPayload})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("NATS server did not start")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// testSecret is the cluster secret of the tests' buses.
var testSecret = []byte("0123456789abcdef0123456789abcdef")

func natsBus(t *testing.T, s *server.Server, id string, h Handler) (*NATS, *nats.Conn) {
	t.Helper()
	return natsBusWith(t, s, id, h, Security{Secret: testSecret})
}

func natsBusWith(t *testing.T, s *server.Server, id string, h Handler, sec Security) (*NATS, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewNATS(NATSConfig{Conn: nc, Node: id, Cluster: "t1", Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(); nc.Close() })
	return b, nc
}

// bigSync answers syncs with n states, and records updates.
type bigSync struct {
	recorder
	n int
}

func (h *bigSync) HandleSync(_ context.Context, _, limiter string) ([]flux.KeyState, error) {
	if limiter != "api" {
		return nil, ErrUnknownLimiter
	}
	out := make([]flux.KeyState, h.n)
	for i := range out {
		out[i] = flux.KeyState{Key: fmt.Sprintf("key-%04d", i), State: []byte{byte(i), 1, 2, 3, 4, 5, 6, 7}}
	}
	return out, nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNATSBus(t *testing.T) {
	s := natsServer(t, 4096)
	ha, hb := &bigSync{n: 10}, &bigSync{n: 1000}
	a, _ := natsBus(t, s, "a", ha)
	b, _ := natsBus(t, s, "b", hb)
	ctx := t.Context()

	// Gossip reaches the others, not the sender; a batch too large for one
	// message is split.
	items := make([]flux.Update, 500)
	for i := range items {
		items[i] = flux.Update{Key: fmt.Sprintf("user-%03d", i), At: int64(1e18) + int64(i), Cost: i % 3}
	}
	if err := a.Publish(ctx, Updates{Limiter: "api", Items: items}); err != nil {
		t.Fatal(err)
	}
	total := func(r *recorder) int {
		r.mu.Lock()
		defer r.mu.Unlock()
		n := 0
		for _, g := range r.got {
			n += len(g.u.Items)
		}
		return n
	}
	waitFor(t, "500 updates at b", func() bool { return total(&hb.recorder) == 500 })
	if msgs := hb.count(); msgs < 2 {
		t.Fatalf("500 updates arrived in %d message(s) under a 4 KiB payload limit", msgs)
	}
	hb.mu.Lock()
	got := hb.got[0]
	hb.mu.Unlock()
	if got.from != "a" || got.u.Items[0] != items[0] {
		t.Fatalf("first message %+v", got.u.Items[0])
	}
	if err := b.Heartbeat(ctx, Heartbeat{Node: "b", State: Active, Interval: time.Second}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's heartbeat at a", func() bool { return ha.heartbeats() == 1 })
	if total(&ha.recorder) != 0 || hb.heartbeats() != 0 {
		t.Fatal("a node received its own gossip or heartbeat")
	}

	// Forwarded checks: request-reply.
	rs, err := a.Forward(ctx, "b", []Check{{Limiter: "api", Key: "k", Cost: 1}})
	if err != nil || len(rs) != 1 {
		t.Fatalf("forward: %v %v", rs, err)
	}
	start := time.Now()
	if _, err := a.Forward(ctx, "nobody", []Check{{Limiter: "api", Key: "k", Cost: 1}}); !errors.Is(err, ErrNoResponders) || time.Since(start) > time.Second {
		t.Fatalf("forward to a missing node: %v after %v", err, time.Since(start))
	}

	// Snapshots larger than a message arrive in chunks, complete.
	states, err := a.Sync(ctx, "b", "api")
	if err != nil || len(states) != 1000 || states[999].Key != "key-0999" || states[999].State[0] != byte(999%256) {
		t.Fatalf("sync: %d states, %v", len(states), err)
	}
	if _, err := a.Sync(ctx, "b", "nope"); !errors.Is(err, ErrUnknownLimiter) {
		t.Fatalf("sync of an unknown limiter: %v", err)
	}
	if _, err := a.Sync(ctx, "nobody", "api"); !errors.Is(err, ErrNoResponders) {
		t.Fatalf("sync from a missing node: %v", err)
	}
}

func TestNATSBusDropsMalformed(t *testing.T) {
	s := natsServer(t, 0)
	h := &recorder{}
	b, _ := natsBusWith(t, s, "b", h, Security{Insecure: true})
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	subj := b.Subjects()
	for _, data := range [][]byte{nil, []byte("garbage"), {kindUpdates, Version, 0xff, 0xff}, {kindForward, Version}} {
		m := nats.NewMsg(subj.Gossip())
		m.Header.Set(HeaderNode, "x")
		m.Data = data
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// A malformed forward gets no reply (the asker times out) and is counted.
	req := nats.NewMsg(subj.Forward("b"))
	req.Data = []byte{kindForward, Version, 9}
	if _, err := nc.RequestMsg(req, 100*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("malformed forward: %v", err)
	}
	good := nats.NewMsg(subj.Gossip())
	good.Header.Set(HeaderNode, "x")
	good.Data = appendUpdates(nil, &Updates{Limiter: "api", Items: []flux.Update{{Key: "k", At: 1, Cost: 1}}})
	if err := nc.PublishMsg(good); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the valid message", func() bool { return h.count() == 1 })
	if got := b.Stats().Malformed; got != 5 {
		t.Fatalf("malformed count %d, want 5", got)
	}

	_ = b.Close()
	if err := b.Publish(t.Context(), Updates{Limiter: "api"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after Close: %v", err)
	}
	if err := nc.PublishMsg(good); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	time.Sleep(50 * time.Millisecond)
	if h.count() != 1 {
		t.Fatal("handler called after Close")
	}
}
