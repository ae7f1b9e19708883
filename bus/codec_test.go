package bus

import (
	"errors"
	"reflect"
	"testing"
	"time"

	flux "github.com/fluxlimiter/flux"
)

func TestCodecRoundTrip(t *testing.T) {
	u := Updates{Limiter: "api", Items: []flux.Update{
		{Key: "a", At: 1_700_000_000_000_000_000, Cost: 3},
		{Key: "bb", At: 1_699_999_999_999_000_000, Cost: 1}, // earlier: negative delta
		{Key: "", At: -5, Cost: 0},
	}}
	gotU, err := decodeUpdates(appendUpdates(nil, &u))
	if err != nil || !reflect.DeepEqual(gotU, u) {
		t.Fatalf("updates: got %+v, %v; want %+v", gotU, err, u)
	}

	hb := Heartbeat{Node: "node-1", State: Active, Fingerprint: 0xdeadbeefcafe, Interval: 1500 * time.Millisecond}
	gotHB, err := decodeHeartbeat(appendHeartbeat(nil, &hb))
	if err != nil || gotHB != hb {
		t.Fatalf("heartbeat: got %+v, %v; want %+v", gotHB, err, hb)
	}

	checks := []Check{{Limiter: "api", Key: "k1", Cost: 1}, {Limiter: "login", Key: "k2", Cost: 5}, {Limiter: "api", Key: "k3", Cost: 0}}
	gotC, err := decodeForward(appendForward(nil, checks))
	if err != nil || !reflect.DeepEqual(gotC, checks) {
		t.Fatalf("forward: got %+v, %v; want %+v", gotC, err, checks)
	}

	rs := []Result{
		{Decision: flux.Decision{Allowed: true, Limit: 11, Remaining: 4, ResetAfter: 3 * time.Second}},
		{Decision: flux.Decision{Limit: 11, RetryAfter: 250 * time.Millisecond, ResetAfter: time.Second, Delay: 7}},
		{Err: flux.ErrFull},
		{Err: ErrUnknownLimiter},
		{Err: errors.New("something else")},
	}
	gotR, err := decodeForwardReply(appendForwardReply(nil, rs))
	if err != nil || len(gotR) != len(rs) {
		t.Fatalf("forward reply: %+v, %v", gotR, err)
	}
	for i := range 2 {
		if gotR[i] != rs[i] {
			t.Errorf("result %d: got %+v, want %+v", i, gotR[i], rs[i])
		}
	}
	if !errors.Is(gotR[2].Err, flux.ErrFull) || !errors.Is(gotR[3].Err, ErrUnknownLimiter) || !errors.Is(gotR[4].Err, ErrRemote) {
		t.Errorf("errors did not keep their sentinels: %v / %v / %v", gotR[2].Err, gotR[3].Err, gotR[4].Err)
	}

	name, err := decodeSync(appendSync(nil, "api"))
	if err != nil || name != "api" {
		t.Fatalf("sync: %q, %v", name, err)
	}
	states := []flux.KeyState{{Key: "a", State: []byte{1, 2, 3, 4, 5, 6, 7, 8}}, {Key: "b", State: []byte{9}}}
	gotS, last, remote, err := decodeSyncReply(appendSyncReply(nil, states, true, nil))
	if err != nil || remote != nil || !last || !reflect.DeepEqual(gotS, states) {
		t.Fatalf("sync reply: %+v last=%v remote=%v err=%v", gotS, last, remote, err)
	}
	_, last, remote, err = decodeSyncReply(appendSyncReply(nil, nil, false, ErrUnknownLimiter))
	if err != nil || !last || !errors.Is(remote, ErrUnknownLimiter) {
		t.Fatalf("sync error reply: last=%v remote=%v err=%v", last, remote, err)
	}
}

func TestCodecRejectsMalformed(t *testing.T) {
	good := appendUpdates(nil, &Updates{Limiter: "api", Items: []flux.Update{{Key: "k", At: 1, Cost: 1}}})
	hb := appendHeartbeat(nil, &Heartbeat{Node: "n1", State: Active})
	cases := map[string][]byte{
		"empty":            nil,
		"wrong kind":       append([]byte{kindHeartbeat}, good[1:]...),
		"wrong version":    append([]byte{kindUpdates, 9}, good[2:]...),
		"truncated":        good[:len(good)-1],
		"trailing":         append(append([]byte(nil), good...), 0),
		"huge count":       {kindUpdates, Version, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge key length":  {kindUpdates, Version, 0, 1, 0xff, 0xff, 0x03},
		"bad state":        append(append([]byte(nil), hb[:5]...), append([]byte{7}, hb[6:]...)...),
		"node with a dot":  appendHeartbeat(nil, &Heartbeat{Node: "a.b", State: Active}),
		"forward bad name": {kindForward, Version, 0, 1, 0, 1, 'k', 1},
	}
	for name, b := range cases {
		var err error
		switch {
		case len(b) > 0 && b[0] == kindHeartbeat:
			_, err = decodeHeartbeat(b)
		case len(b) > 0 && b[0] == kindForward:
			_, err = decodeForward(b)
		default:
			_, err = decodeUpdates(b)
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzDecode feeds arbitrary bytes to every decoder: none may panic, and
// whatever decodes must encode back to an equivalent message.
func FuzzDecode(f *testing.F) {
	f.Add(appendUpdates(nil, &Updates{Limiter: "api", Items: []flux.Update{{Key: "k", At: 42, Cost: 2}}}))
	f.Add(appendHeartbeat(nil, &Heartbeat{Node: "n1", State: Joining, Fingerprint: 7, Interval: time.Second}))
	f.Add(appendForward(nil, []Check{{Limiter: "a", Key: "k", Cost: 1}}))
	f.Add(appendForwardReply(nil, []Result{{Decision: flux.Decision{Allowed: true, Limit: 3}}, {Err: flux.ErrFull}}))
	f.Add(appendSync(nil, "api"))
	f.Add(appendSyncReply(nil, []flux.KeyState{{Key: "k", State: []byte{1}}}, true, nil))
	f.Add([]byte{kindUpdates, Version, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if u, err := decodeUpdates(b); err == nil {
			u2, err := decodeUpdates(appendUpdates(nil, &u))
			if err != nil || !reflect.DeepEqual(u, u2) {
				t.Fatalf("updates do not round-trip: %+v vs %+v (%v)", u, u2, err)
			}
		}
		if hb, err := decodeHeartbeat(b); err == nil {
			if hb2, err := decodeHeartbeat(appendHeartbeat(nil, &hb)); err != nil || hb != hb2 {
				t.Fatalf("heartbeat does not round-trip: %+v vs %+v (%v)", hb, hb2, err)
			}
		}
		if cs, err := decodeForward(b); err == nil {
			if cs2, err := decodeForward(appendForward(nil, cs)); err != nil || !reflect.DeepEqual(cs, cs2) {
				t.Fatalf("forward does not round-trip: %+v vs %+v (%v)", cs, cs2, err)
			}
		}
		_, _ = decodeForwardReply(b)
		_, _ = decodeSync(b)
		_, _, _, _ = decodeSyncReply(b)
	})
}

func TestValidNodeID(t *testing.T) {
	for _, ok := range []string{"a", "node-1", "N_2", NewNodeID()} {
		if err := ValidNodeID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "*", ">", string(make([]byte, MaxNodeIDLen+1))} {
		if err := ValidNodeID(bad); !errors.Is(err, ErrInvalidNode) {
			t.Errorf("%q: got %v, want ErrInvalidNode", bad, err)
		}
	}
}
