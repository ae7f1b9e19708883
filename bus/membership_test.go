package bus

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	flux "github.com/fluxlimiter/flux"
)

// hbHandler feeds heartbeats to a Membership and ignores the rest.
type hbHandler struct{ m *Membership }

func (h hbHandler) HandleHeartbeat(hb Heartbeat)                           { h.m.Observe(hb) }
func (hbHandler) HandleUpdates(string, Updates)                            {}
func (hbHandler) HandleForward(context.Context, string, []Check, []Result) {}
func (hbHandler) HandleSync(context.Context, string, string) ([]flux.KeyState, error) {
	return nil, nil
}

type member struct {
	bus *Mem
	m   *Membership
	mu  sync.Mutex
	evs []Event
}

func (mb *member) events() []Event {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return slices.Clone(mb.evs)
}

func (mb *member) close() {
	_ = mb.m.Close()
	_ = mb.bus.Close()
}

// join starts a member on net; it is joining until activated.
func join(t *testing.T, net *Network, id string, fp uint64) *member {
	t.Helper()
	b, err := net.Join(id)
	if err != nil {
		t.Fatal(err)
	}
	mb := &member{bus: b}
	mb.m, err = NewMembership(b, MembershipConfig{
		Interval:    time.Second,
		Fingerprint: func() uint64 { return fp },
		OnEvent: func(ev Event) {
			mb.mu.Lock()
			mb.evs = append(mb.evs, ev)
			mb.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(hbHandler{mb.m}); err != nil {
		t.Fatal(err)
	}
	if err := mb.m.Start(); err != nil {
		t.Fatal(err)
	}
	return mb
}

func activate(t *testing.T, mbs ...*member) {
	t.Helper()
	for _, mb := range mbs {
		if err := mb.m.Activate(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	synctest.Wait()
}

func nodes(mb *member) []string { return mb.m.View().Nodes() }

func TestMembershipJoinLeaveTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := NewNetwork()
		a, b, c := join(t, net, "a", 1), join(t, net, "b", 1), join(t, net, "c", 1)
		defer a.close()
		defer b.close()
		activate(t, a, b, c)
		for _, mb := range []*member{a, b, c} {
			if got := nodes(mb); !slices.Equal(got, []string{"a", "b", "c"}) {
				t.Fatalf("%s sees %v", mb.bus.Node(), got)
			}
		}

		// A joining node learns its peers from their answers to its probe
		// at once, and is nobody's member until it activates.
		d := join(t, net, "d", 1)
		synctest.Wait()
		if got := d.m.Peers(); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Fatalf("joining d knows %v, want a b c without waiting a heartbeat", got)
		}
		if a.m.View().Contains("d") || d.m.View().Contains("d") {
			t.Fatal("d is a member before it activates")
		}
		activate(t, d)
		if got := nodes(a); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
			t.Fatalf("a sees %v after d activated", got)
		}

		// A node that leaves is dropped at once.
		d.close()
		synctest.Wait()
		if got := nodes(a); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Fatalf("a sees %v after d left", got)
		}

		// A node that stops answering is dropped after three missed
		// heartbeats (plus a quarter interval of slack), not before.
		net.Pause("c")
		paused := time.Now()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if !a.m.View().Contains("c") {
			t.Fatal("c dropped after missing only one or two heartbeats")
		}
		for a.m.View().Contains("c") || b.m.View().Contains("c") {
			time.Sleep(10 * time.Millisecond)
			synctest.Wait()
		}
		if waited := time.Since(paused); waited < 2250*time.Millisecond || waited > 3250*time.Millisecond+10*time.Millisecond {
			t.Fatalf("c dropped %v after it stopped, want 3.25 intervals after its last heartbeat", waited)
		}
		if st := a.m.Stats(); st.TimedOut != 1 || st.Left != 1 || st.Members != 2 {
			t.Fatalf("a's stats %+v", st)
		}
		var kinds []string
		for _, ev := range a.events() {
			kinds = append(kinds, ev.Kind.String()+":"+ev.Node)
		}
		// a may count b and c before or after itself; the rest is ordered.
		slices.Sort(kinds[:3])
		if want := []string{"joined:a", "joined:b", "joined:c", "joined:d", "left:d", "timed_out:c"}; !slices.Equal(kinds, want) {
			t.Fatalf("a's events %v, want %v", kinds, want)
		}

		// c comes back: it must join again (its state is gone).
		net.Resume("c")
		c.close()
		c2 := join(t, net, "c", 1)
		defer c2.close()
		activate(t, c2)
		if !a.m.View().Contains("c") {
			t.Fatal("restarted c not a member again")
		}
	})
}

func TestMembershipRestartWithSameID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := NewNetwork()
		a, b := join(t, net, "a", 1), join(t, net, "b", 1)
		defer a.close()
		activate(t, a, b)
		// b crashes (no leaving heartbeat) and restarts at once under the
		// same id: its Joining heartbeat drops the old b from a's view.
		net.Pause("b")
		_ = b.m.Close()
		_ = b.bus.Close()
		net.Resume("b")
		b2 := join(t, net, "b", 1)
		defer b2.close()
		synctest.Wait()
		if a.m.View().Contains("b") {
			t.Fatal("a still counts the old b while the new one catches up")
		}
		activate(t, b2)
		if !a.m.View().Contains("b") {
			t.Fatal("a does not count the new b")
		}
	})
}

func TestMembershipFingerprintMismatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := NewNetwork()
		a, b := join(t, net, "a", 1), join(t, net, "b", 2)
		defer a.close()
		defer b.close()
		activate(t, a, b)
		time.Sleep(3 * time.Second) // several heartbeats: one report each side
		synctest.Wait()
		var got []Event
		for _, ev := range a.events() {
			if ev.Kind == Mismatch {
				got = append(got, ev)
			}
		}
		if len(got) != 1 || got[0].Node != "b" || got[0].Theirs != 2 || got[0].Ours != 1 {
			t.Fatalf("mismatch events %+v", got)
		}
		st := a.m.Stats()
		if st.Mismatched != 1 || st.Mismatches < 3 || st.Members != 2 {
			t.Fatalf("stats %+v: want b counted as mismatched but still a member", st)
		}
	})
}
