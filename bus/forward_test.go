package bus

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	flux "github.com/fluxlimiter/flux"
)

// owner answers forwarded checks with Remaining = len(key) and records
// the size of every request.
type owner struct {
	hbHandler
	mu       sync.Mutex
	requests []int
}

func (o *owner) HandleForward(_ context.Context, _ string, checks []Check, out []Result) {
	o.mu.Lock()
	o.requests = append(o.requests, len(checks))
	o.mu.Unlock()
	for i, c := range checks {
		if c.Key == "bad" {
			out[i].Err = flux.ErrKeyTooLong
			continue
		}
		out[i].Decision = flux.Decision{Allowed: true, Remaining: len(c.Key), Limit: c.Cost}
	}
}

func (o *owner) sizes() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]int(nil), o.requests...)
}

func pair(t *testing.T) (*Network, *Mem, *Mem, *owner) {
	t.Helper()
	net := NewNetwork()
	a, err := net.Join("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.Join("b")
	if err != nil {
		t.Fatal(err)
	}
	o := &owner{}
	if err := a.Listen(&owner{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return net, a, b, o
}

func TestForwarderCoalesces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, _, o := pair(t)
		f, err := NewForwarder(a, ForwarderConfig{Delay: 300 * time.Microsecond, MaxBatch: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		keys := []string{"k", "kk", "bad", "kkkk", "kkkkk", "kkkkkk"}
		calls := make([]*Call, len(keys))
		start := time.Now()
		for i, k := range keys {
			calls[i] = f.Enqueue("b", Check{Limiter: "api", Key: k, Cost: i}, 0)
		}
		for i, c := range calls {
			res, err := c.Wait(t.Context())
			switch {
			case err != nil:
				t.Fatalf("call %d: %v", i, err)
			case keys[i] == "bad":
				if !errors.Is(res.Err, flux.ErrKeyTooLong) {
					t.Fatalf("call %d: owner's error lost: %+v", i, res)
				}
			case res.Err != nil || res.Decision.Remaining != len(keys[i]) || res.Decision.Limit != i:
				t.Fatalf("call %d got %+v: results out of order", i, res)
			}
		}
		// The first four filled a batch and left at once; the last two
		// waited for the delay.
		if got := o.sizes(); len(got) != 2 || got[0] != 4 || got[1] != 2 {
			t.Fatalf("request sizes %v, want [4 2]", got)
		}
		if waited := time.Since(start); waited != 300*time.Microsecond {
			t.Fatalf("the last batch left after %v, want the 300µs delay", waited)
		}
		if st := f.Stats(); st.Requests != 2 || st.Checks != 6 || st.Failed != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestForwarderFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, b, _ := pair(t)
		f, err := NewForwarder(a, ForwarderConfig{})
		if err != nil {
			t.Fatal(err)
		}

		// A stalled owner: the request times out after the check's timeout.
		net.Pause("b")
		start := time.Now()
		_, err = f.Ask(t.Context(), "b", Check{Limiter: "api", Key: "k", Cost: 1}, 50*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 50*time.Millisecond+DefaultForwardDelay {
			t.Fatalf("stalled owner: %v after %v", err, time.Since(start))
		}
		net.Resume("b")

		// A departed owner: no responders, at once.
		_ = b.Close()
		start = time.Now()
		_, err = f.Ask(t.Context(), "b", Check{Limiter: "api", Key: "k", Cost: 1}, 0)
		if !errors.Is(err, ErrNoResponders) || time.Since(start) != DefaultForwardDelay {
			t.Fatalf("departed owner: %v after %v", err, time.Since(start))
		}
		if st := f.Stats(); st.Failed != 2 {
			t.Fatalf("stats %+v", st)
		}

		// Close fails what is queued and refuses more.
		call := f.Enqueue("b", Check{Limiter: "api", Key: "k"}, 0)
		_ = f.Close()
		if _, err := call.Wait(t.Context()); !errors.Is(err, ErrClosed) {
			t.Fatalf("queued call after Close: %v", err)
		}
		if _, err := f.Ask(t.Context(), "b", Check{}, 0); !errors.Is(err, ErrClosed) {
			t.Fatalf("Ask after Close: %v", err)
		}
		_ = f.Close()
	})
}

func TestMemBus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := NewNetwork()
		var got [3]*recorder
		var bs [3]*Mem
		for i, id := range []string{"a", "b", "c"} {
			b, err := net.Join(id)
			if err != nil {
				t.Fatal(err)
			}
			got[i] = &recorder{}
			if err := b.Listen(got[i]); err != nil {
				t.Fatal(err)
			}
			bs[i] = b
			defer b.Close()
		}
		if _, err := net.Join("a"); !errors.Is(err, ErrInvalidNode) {
			t.Fatalf("duplicate id: %v", err)
		}
		if err := bs[0].Listen(got[0]); !errors.Is(err, ErrAlreadyListening) {
			t.Fatalf("second Listen: %v", err)
		}
		net.SetLatency(time.Millisecond)
		net.Cut("a", "c")
		u := Updates{Limiter: "api", Items: []flux.Update{{Key: "k", At: 5, Cost: 2}}}
		if err := bs[0].Publish(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got[1].count() != 0 {
			t.Fatal("delivered before the latency elapsed")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got[0].count() != 0 || got[1].count() != 1 || got[2].count() != 0 {
			t.Fatalf("deliveries a=%d b=%d c=%d: want only b (own ignored, a-c cut)", got[0].count(), got[1].count(), got[2].count())
		}
		if r := got[1].last(); r.from != "a" || r.u.Limiter != "api" || r.u.Items[0] != u.Items[0] {
			t.Fatalf("b received %+v", r)
		}
		if _, err := bs[0].Forward(t.Context(), "c", nil); !errors.Is(err, ErrNoResponders) {
			t.Fatalf("forward across a cut: %v", err)
		}
		st, err := bs[0].Sync(t.Context(), "b", "api")
		if err != nil || len(st) != 1 || st[0].Key != "api" {
			t.Fatalf("sync: %v %v", st, err)
		}
		if _, err := bs[0].Sync(t.Context(), "b", "nope"); !errors.Is(err, ErrUnknownLimiter) {
			t.Fatalf("sync of an unknown limiter: %v", err)
		}
	})
}

// recorder records updates and answers syncs with one state named after
// the limiter.
type recorder struct {
	hbHandler
	mu  sync.Mutex
	got []received
	hbs int
}

func (r *recorder) HandleHeartbeat(Heartbeat) {
	r.mu.Lock()
	r.hbs++
	r.mu.Unlock()
}

func (r *recorder) heartbeats() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hbs
}

type received struct {
	from string
	u    Updates
}

func (r *recorder) HandleUpdates(from string, u Updates) {
	r.mu.Lock()
	r.got = append(r.got, received{from, u})
	r.mu.Unlock()
}

func (r *recorder) HandleSync(_ context.Context, _ string, limiter string) ([]flux.KeyState, error) {
	if limiter != "api" {
		return nil, ErrUnknownLimiter
	}
	return []flux.KeyState{{Key: limiter, State: []byte{1}}}, nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *recorder) last() received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[len(r.got)-1]
}
