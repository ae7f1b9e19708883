package cluster_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	flux "github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
	"github.com/fluxlimiter/flux/cluster"
)

// TestPeerUpdatesValidated is issue 18 §3's "peer data validated against
// local sense": a peer (here one that is on the bus, so past
// authentication: a faulty or compromised node) sends an admission ten
// years ahead, a cost of a billion, a key beyond the maximum length, and a
// heartbeat announcing another member's departure. None denies a key
// for longer than honest traffic could, and membership holds.
func TestPeerUpdatesValidated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		ns := startNodes(t, net, []string{"a", "b"}, spec("api", cluster.BestEffort, 10, 9)) // capacity 10
		defer closeAll(ns)
		a := ns[0]
		evil, err := net.Join("evil")
		if err != nil {
			t.Fatal(err)
		}
		defer evil.Close()
		if err := evil.Listen(nopHandler{}); err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		now := time.Now().UnixNano()
		tenYears := now + int64(10*365*24*time.Hour)
		if err := evil.Publish(ctx, bus.Updates{Limiter: "api", Items: []flux.Update{
			{Key: "future", At: tenYears, Cost: 1},
			{Key: "costly", At: now, Cost: 1 << 30},
			{Key: strings.Repeat("k", 1025), At: now, Cost: 1}, // one byte over the default key length (1 KiB)
		}}); err != nil {
			t.Fatal(err)
		}
		if err := evil.Heartbeat(ctx, bus.Heartbeat{Node: "b", State: bus.Leaving}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()

		st := a.coord.Stats()
		if st.UpdatesRefused != 1 || st.UpdatesClamped != 1 || st.UpdatesDropped != 1 || st.Bus.Spoofed != 1 {
			t.Fatalf("refused %d, clamped %d, dropped %d, spoofed %d: want 1 each",
				st.UpdatesRefused, st.UpdatesClamped, st.UpdatesDropped, st.Bus.Spoofed)
		}
		if got := a.coord.Members(); got != 2 {
			t.Fatalf("a counts %d members after a heartbeat naming b: want 2", got)
		}
		if !a.check(t, "api", "future").Allowed {
			t.Fatal("an admission stamped ten years ahead denied the key")
		}
		// The cost was applied as capacity + rate × (sync interval + 1 s)
		// = 10 + 11 = 21 requests: denied now, free again within about 2 s
		// (a billion requests at 10/s would have been 3 years).
		if a.check(t, "api", "costly").Allowed {
			t.Fatal("the clamped cost was not applied at all")
		}
		time.Sleep(2200 * time.Millisecond)
		if !a.check(t, "api", "costly").Allowed {
			t.Fatal("a huge cost from a peer still denies the key after 2.2 s")
		}
	})
}

// nopHandler ignores what the bus delivers.
type nopHandler struct{}

func (nopHandler) HandleUpdates(string, bus.Updates)                                        {}
func (nopHandler) HandleHeartbeat(bus.Heartbeat)                                            {}
func (nopHandler) HandleForward(_ context.Context, _ string, _ []bus.Check, _ []bus.Result) {}
func (nopHandler) HandleSync(context.Context, string, string) ([]flux.KeyState, error) {
	return nil, nil
}
