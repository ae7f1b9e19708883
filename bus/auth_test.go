package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"

	flux "github.com/fluxlimiter/flux"
)

// forwardCounter records updates and counts the forwarded checks it
// decides (allowing each).
type forwardCounter struct {
	recorder
	fmu     sync.Mutex
	decided int
}

func (h *forwardCounter) HandleForward(_ context.Context, _ string, checks []Check, out []Result) {
	h.fmu.Lock()
	h.decided += len(checks)
	h.fmu.Unlock()
	for i := range out {
		out[i].Decision = flux.Decision{Allowed: true, Limit: 1, Remaining: 1}
	}
}

func (h *forwardCounter) forwards() int {
	h.fmu.Lock()
	defer h.fmu.Unlock()
	return h.decided
}

// TestNATSBusRefusesForgeries is the attack of issue 18 §3 on the bus: a
// party that can publish on the cluster's subjects but does not hold the
// cluster secret forges gossip (a key denied for ten years), heartbeats (a
// member's departure, a phantom member), forwarded checks and snapshot
// requests, and replays what it captured from a real node. Nothing reaches
// the handlers; every refusal is counted; genuine traffic still flows.
func TestNATSBusRefusesForgeries(t *testing.T) {
	s := natsServer(t, 0)
	ha, hb := &forwardCounter{}, &forwardCounter{}
	a, _ := natsBus(t, s, "a", ha)
	b, _ := natsBus(t, s, "b", hb)
	hc := &forwardCounter{}
	c, _ := natsBus(t, s, "c", hc)
	ctx := t.Context()
	subj := b.Subjects()

	attacker, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	send := func(subject string, data []byte) {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Header.Set(HeaderNode, "a")
		m.Data = data
		if err := attacker.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// Capture what a really sends, to replay it (what verifies under the
	// cluster's key: not the forgeries below).
	spyKey := newAuthenticator("spy", "t1", testSecret, DefaultMaxSkew, time.Now)
	genuine := func(m *nats.Msg) bool {
		to := ""
		if m.Subject == subj.Forward("b") || m.Subject == subj.Sync("b") {
			to = "b"
		}
		_, v := spyKey.open(m.Data, to)
		return v == accepted
	}
	captured := make(chan *nats.Msg, 64)
	spy, err := attacker.ChanSubscribe(subj.All(), captured)
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Unsubscribe()
	if err := attacker.Flush(); err != nil {
		t.Fatal(err)
	}

	// 1. Unsigned messages, as version 1 wrote them.
	tenYears := time.Now().Add(10 * 365 * 24 * time.Hour).UnixNano()
	send(subj.Gossip(), appendUpdates(nil, &Updates{Limiter: "api", Items: []flux.Update{{Key: "victim", At: tenYears, Cost: 1 << 30}}}))
	send(subj.Heartbeat(), appendHeartbeat(nil, &Heartbeat{Node: "a", State: Leaving}))
	send(subj.Heartbeat(), appendHeartbeat(nil, &Heartbeat{Node: "phantom", State: Active, Interval: time.Second}))
	fwd := nats.NewMsg(subj.Forward("b"))
	fwd.Header.Set(HeaderNode, "a")
	fwd.Data = appendForward(nil, []Check{{Limiter: "api", Key: "victim", Cost: 1}})
	if _, err := attacker.RequestMsg(fwd, 200*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("unsigned forward: %v, want no answer", err)
	}
	syncReq := nats.NewMsg(subj.Sync("b"))
	syncReq.Data = appendSync(nil, "api")
	if _, err := attacker.RequestMsg(syncReq, 200*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("unsigned sync: %v, want no answer", err)
	}

	// 2. Signed with another secret (another cluster's, a guess).
	other := newGuard("a", "t1", Security{Secret: []byte("another secret, 32 bytes or more!")})
	forged, _ := other.wrap(nil, kindUpdates, "", 0, func(dst []byte) []byte {
		return appendUpdates(dst, &Updates{Limiter: "api", Items: []flux.Update{{Key: "victim", At: tenYears, Cost: 1}}})
	})
	send(subj.Gossip(), forged)

	// 3. Signed with the secret, for another cluster name: other keys.
	elsewhere := newGuard("a", "t2", Security{Secret: testSecret})
	forged, _ = elsewhere.wrap(nil, kindHeartbeat, "", 0, func(dst []byte) []byte {
		return appendHeartbeat(dst, &Heartbeat{Node: "a", State: Leaving})
	})
	send(subj.Heartbeat(), forged)
	if err := attacker.Flush(); err != nil {
		t.Fatal(err)
	}

	// Genuine traffic from a: gossip, a heartbeat, a forward, a sync.
	u := Updates{Limiter: "api", Items: []flux.Update{{Key: "k", At: time.Now().UnixNano(), Cost: 1}}}
	if err := a.Publish(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := a.Heartbeat(ctx, Heartbeat{Node: "a", State: Active, Interval: time.Second}); err != nil {
		t.Fatal(err)
	}
	if rs, err := a.Forward(ctx, "b", []Check{{Limiter: "api", Key: "k", Cost: 1}}); err != nil || len(rs) != 1 || !rs[0].Decision.Allowed {
		t.Fatalf("genuine forward: %v %v", rs, err)
	}
	if _, err := a.Sync(ctx, "b", "api"); err != nil {
		t.Fatalf("genuine sync: %v", err)
	}
	waitFor(t, "a's genuine gossip and heartbeat", func() bool { return hb.count() == 1 && hb.heartbeats() == 1 })
	if got := hb.last(); got.from != "a" || got.u.Items[0] != u.Items[0] {
		t.Fatalf("b received %+v", got)
	}
	if hb.forwards() != 1 {
		t.Fatalf("b decided %d forwarded checks, want the genuine 1", hb.forwards())
	}

	// 4. Replays of a's genuine messages, captured on the wire: each kind,
	// to its own subject and to another node's.
	var replays int
	deadline := time.After(5 * time.Second)
	for kinds := map[string]bool{}; len(kinds) < 4; {
		select {
		case m := <-captured:
			if m.Header.Get(HeaderNode) != "a" || kinds[m.Subject] || !genuine(m) {
				continue
			}
			kinds[m.Subject] = true
			r := nats.NewMsg(m.Subject)
			r.Header = m.Header
			r.Data = m.Data
			r.Reply = attacker.NewInbox()
			if err := attacker.PublishMsg(r); err != nil {
				t.Fatal(err)
			}
			replays++
			if m.Subject == subj.Forward("b") {
				r.Subject = subj.Forward("c") // a forward meant for b, replayed to c
				if err := attacker.PublishMsg(r); err != nil {
					t.Fatal(err)
				}
				replays++
			}
		case <-deadline:
			t.Fatal("did not capture a's four kinds of message")
		}
	}
	if err := attacker.Flush(); err != nil {
		t.Fatal(err)
	}
	// A signed heartbeat in which a speaks for b.
	spoof, _ := a.g.wrap(nil, kindHeartbeat, "", 0, func(dst []byte) []byte {
		return appendHeartbeat(dst, &Heartbeat{Node: "b", State: Leaving})
	})
	send(subj.Heartbeat(), spoof)
	if err := attacker.Flush(); err != nil {
		t.Fatal(err)
	}

	waitFor(t, "every refusal counted", func() bool {
		st := b.Stats()
		// b: the replayed gossip, heartbeat, forward and sync; c: the
		// gossip and heartbeat (broadcast) and the forward meant for b.
		return replays == 5 && st.Unauthenticated == 7 && st.Replayed == 4 && c.Stats().Replayed == 3
	})
	time.Sleep(50 * time.Millisecond)
	if hb.count() != 1 || hb.heartbeats() != 1 || hb.forwards() != 1 || ha.forwards()+hc.forwards() != 0 {
		t.Fatalf("forged or replayed messages reached a handler: b has %d gossip, %d heartbeats, %d forwards; a and c %d forwards",
			hb.count(), hb.heartbeats(), hb.forwards(), ha.forwards()+hc.forwards())
	}
	if st := b.Stats(); st.Malformed != 0 {
		t.Fatalf("b counted %d malformed", st.Malformed)
	}
	// a's own spoofed heartbeat goes to b only (a ignores its own).
	waitFor(t, "the spoofed heartbeat counted", func() bool { return b.Stats().Spoofed == 1 })
	if hb.heartbeats() != 1 {
		t.Fatal("a heartbeat naming another node was delivered")
	}
}

// TestSecretRequired: a NATS bus without a secret of MinSecretLen bytes is
// refused unless it says it is insecure.
func TestSecretRequired(t *testing.T) {
	s := natsServer(t, 0)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, sec := range []Security{{}, {Secret: []byte("short")}, {Secret: testSecret[:MinSecretLen-1]}} {
		if _, err := NewNATS(NATSConfig{Conn: nc, Node: "a", Security: sec}); !errors.Is(err, ErrSecret) {
			t.Fatalf("secret of %d bytes: %v, want ErrSecret", len(sec.Secret), err)
		}
	}
	b, err := NewNATS(NATSConfig{Conn: nc, Node: "a", Security: Security{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
}

// TestStaleAndFutureRefused: a message stamped more than MaxSkew from the
// receiver's clock is refused, whichever way.
func TestStaleAndFutureRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := NewNetwork()
		recv := &recorder{}
		b, err := net.JoinSecure("b", Security{Secret: testSecret})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.Listen(recv); err != nil {
			t.Fatal(err)
		}
		for i, off := range []time.Duration{-DefaultMaxSkew - time.Second, DefaultMaxSkew + time.Second, 0} {
			a, err := net.JoinSecure(fmt.Sprintf("a%d", i), Security{Secret: testSecret, Now: func() time.Time { return time.Now().Add(off) }})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Publish(t.Context(), Updates{Limiter: "api", Items: []flux.Update{{Key: "k", At: 1, Cost: 1}}}); err != nil {
				t.Fatal(err)
			}
			_ = a.Close()
		}
		synctest.Wait()
		if recv.count() != 1 || b.Stats().Replayed != 2 {
			t.Fatalf("delivered %d, replayed %d: want only the message stamped now", recv.count(), b.Stats().Replayed)
		}
	})
}

// TestPeerBounds: one peer's gossip is bounded per message and per second.
func TestPeerBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := NewNetwork()
		recv := &recorder{}
		b, err := net.JoinSecure("b", Security{Secret: testSecret, MaxItemsPerMessage: 100, PeerItemsPerSecond: 250})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.Listen(recv); err != nil {
			t.Fatal(err)
		}
		// The sender's bound is larger: its 150-item message is refused.
		a, err := net.JoinSecure("a", Security{Secret: testSecret, MaxItemsPerMessage: 200})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		items := func(n int) Updates {
			u := Updates{Limiter: "api"}
			for i := range n {
				u.Items = append(u.Items, flux.Update{Key: fmt.Sprint("k", i), At: 1, Cost: 1})
			}
			return u
		}
		ctx := t.Context()
		_ = a.Publish(ctx, items(150))
		for range 4 { // 400 items in a second: the first 250 pass
			_ = a.Publish(ctx, items(100))
		}
		synctest.Wait()
		if recv.count() != 2 || b.Stats().Throttled != 3 {
			t.Fatalf("delivered %d messages, throttled %d: want 2 and 3", recv.count(), b.Stats().Throttled)
		}
		time.Sleep(time.Second) // the allowance refills
		_ = a.Publish(ctx, items(100))
		synctest.Wait()
		if recv.count() != 3 {
			t.Fatalf("delivered %d messages after a second, want 3", recv.count())
		}
	})
}

// TestSecureMemCluster: signed forwards and syncs work end to end between
// Mem buses, and a node with another secret is not heard.
func TestSecureMemCluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := NewNetwork()
		hb := &forwardCounter{}
		b, _ := net.JoinSecure("b", Security{Secret: testSecret})
		defer b.Close()
		if err := b.Listen(hb); err != nil {
			t.Fatal(err)
		}
		a, _ := net.JoinSecure("a", Security{Secret: testSecret})
		defer a.Close()
		if err := a.Listen(&recorder{}); err != nil {
			t.Fatal(err)
		}
		rs, err := a.Forward(t.Context(), "b", []Check{{Limiter: "api", Key: "k", Cost: 1}})
		if err != nil || len(rs) != 1 || !rs[0].Decision.Allowed {
			t.Fatalf("forward: %v %v", rs, err)
		}
		if st, err := a.Sync(t.Context(), "b", "api"); err != nil || len(st) != 1 {
			t.Fatalf("sync: %v %v", st, err)
		}
		x, _ := net.JoinSecure("x", Security{Secret: []byte("not the cluster's secret, at all!")})
		defer x.Close()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := x.Forward(ctx, "b", []Check{{Limiter: "api", Key: "k", Cost: 1}}); err == nil {
			t.Fatal("a forward signed with another secret was answered")
		}
		_ = x.Heartbeat(t.Context(), Heartbeat{Node: "x", State: Active})
		// An unsigned update that claims to come from a.
		net.Inject("a", "b", appendUpdates(nil, &Updates{Limiter: "api", Items: []flux.Update{{Key: "k", At: 1, Cost: 1}}}))
		synctest.Wait()
		if hb.forwards() != 1 || hb.heartbeats() != 0 || hb.count() != 0 || b.Stats().Unauthenticated != 3 {
			t.Fatalf("b decided %d checks, %d heartbeats, %d unauthenticated", hb.forwards(), hb.heartbeats(), b.Stats().Unauthenticated)
		}
	})
}

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	for _, c := range []struct {
		seq  uint64
		want bool
	}{
		{0, false}, {1, true}, {1, false}, {3, true}, {2, true}, {2, false},
		{3 + replayBits - 1, true}, {3, false}, {4, true}, {3 + 3*replayBits, true},
		{3 + 2*replayBits, false}, {3 + 3*replayBits - 1, true},
	} {
		if got := w.accept(c.seq); got != c.want {
			t.Fatalf("accept(%d) = %v, want %v", c.seq, got, c.want)
		}
	}
}

// BenchmarkSealGossip measures what signing and verifying add to one
// gossip message of 1000 updates (keys of 16 bytes), against encoding and
// decoding it alone.
func BenchmarkSealGossip(b *testing.B) {
	u := Updates{Limiter: "api"}
	now := time.Now().UnixNano()
	for i := range 1000 {
		u.Items = append(u.Items, flux.Update{Key: fmt.Sprintf("user-%011d", i), At: now + int64(i), Cost: 1})
	}
	enc := func(dst []byte) []byte { return appendUpdates(dst, &u) }
	for _, secure := range []bool{false, true} {
		name := "plain"
		sec := Security{Insecure: true, PeerItemsPerSecond: -1}
		if secure {
			name, sec = "signed", Security{Secret: testSecret, PeerItemsPerSecond: -1}
		}
		tx, rx := newGuard("a", "c", sec), newGuard("b", "c", sec)
		h := &recorder{}
		b.Run(name, func(b *testing.B) {
			var buf []byte
			for b.Loop() {
				buf, _ = tx.wrap(buf[:0], kindUpdates, "", 0, enc)
				rx.dispatchPub(h, "a", buf)
				h.got = h.got[:0]
			}
			b.SetBytes(int64(len(buf)))
			if st := rx.stats(); st.Unauthenticated+st.Replayed+st.Malformed+st.Throttled != 0 {
				b.Fatalf("refused: %+v", st)
			}
		})
	}
}
