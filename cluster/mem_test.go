package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	flux "github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
	"github.com/fluxlimiter/flux/cluster"
)

// node is one cluster member on an in-memory network.
type node struct {
	id    string
	lims  map[string]*flux.Limiter
	coord *cluster.Coordinator
}

// limiterSpec is a limiter every node of a test cluster registers.
type limiterSpec struct {
	name  string
	limit flux.Limit
	cfg   cluster.LimiterConfig
}

func spec(name string, mode cluster.Mode, rate, burst float64) limiterSpec {
	return limiterSpec{name: name, limit: flux.Limit{Rate: rate, Burst: burst}, cfg: cluster.LimiterConfig{Mode: mode}}
}

// newNode registers specs and starts a node; inside a synctest bubble the
// join wait passes at once.
func newNode(t *testing.T, net *bus.Network, id string, specs ...limiterSpec) *node {
	t.Helper()
	b, err := net.Join(id)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.New(b, cluster.Config{})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{id: id, lims: map[string]*flux.Limiter{}, coord: c}
	for _, s := range specs {
		l, err := flux.New(s.limit)
		if err != nil {
			t.Fatal(err)
		}
		n.lims[s.name] = l
		if err := c.Register(s.name, l, s.cfg); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *node) close() {
	_ = n.coord.Close()
	for _, l := range n.lims {
		_ = l.Close()
	}
}

func startNodes(t *testing.T, net *bus.Network, ids []string, specs ...limiterSpec) []*node {
	t.Helper()
	var ns []*node
	for _, id := range ids {
		ns = append(ns, newNode(t, net, id, specs...))
	}
	synctest.Wait()
	for _, n := range ns {
		if got := n.coord.Members(); got != len(ids) {
			t.Fatalf("%s counts %d members, want %d", n.id, got, len(ids))
		}
	}
	return ns
}

func closeAll(ns []*node) {
	for _, n := range ns {
		n.close()
	}
}

func (n *node) check(t *testing.T, limiter, key string) cluster.Answer {
	t.Helper()
	a, err := n.coord.Check(t.Context(), limiter, key, 1)
	if err != nil {
		t.Fatalf("%s: check %s/%s: %v", n.id, limiter, key, err)
	}
	return a
}

func (n *node) remaining(t *testing.T, limiter, key string) int {
	t.Helper()
	d, err := n.lims[limiter].Peek(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return d.Remaining
}

// keyOwnedBy returns a key that view gives to owner.
func keyOwnedBy(t *testing.T, v *bus.View, owner string) string {
	t.Helper()
	for i := range 1000 {
		if k := fmt.Sprintf("key-%d", i); v.Owner(k) == owner {
			return k
		}
	}
	t.Fatalf("no key for %s", owner)
	return ""
}

// settle lets a sync interval pass and everything queued be handled.
func settle() {
	time.Sleep(cluster.DefaultSyncInterval)
	synctest.Wait()
}

func TestBestEffortGossipIsAggregatedAndAdditive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		// 10 per second, capacity 10: no refill within the test's 30ms.
		ns := startNodes(t, net, []string{"a", "b", "c"}, spec("api", cluster.BestEffort, 10, 9))
		defer closeAll(ns)
		a, b, c := ns[0], ns[1], ns[2]

		for range 4 {
			if ans := a.check(t, "api", "k"); !ans.Allowed || ans.Path != cluster.PathLocal {
				t.Fatalf("a's check: %+v", ans)
			}
		}
		settle()
		for _, n := range ns {
			if got := n.remaining(t, "api", "k"); got != 6 {
				t.Fatalf("%s sees %d remaining after a admitted 4, want 6", n.id, got)
			}
		}
		if st := a.coord.Stats().Limiters["api"]; st.Published != 1 {
			t.Fatalf("a published %d updates for 4 admissions of one key, want 1 aggregate", st.Published)
		}
		if st := b.coord.Stats().Limiters["api"]; st.Applied != 1 {
			t.Fatalf("b applied %d updates, want 1", st.Applied)
		}

		// b and c admit at the same time, each on its own view: additive
		// updates make everyone count both (a max-merge would lose one).
		for range 3 {
			b.check(t, "api", "k")
			c.check(t, "api", "k")
		}
		settle()
		for _, n := range ns {
			if got := n.remaining(t, "api", "k"); got != 0 {
				t.Fatalf("%s sees %d remaining after 4+3+3 admissions of 10, want 0", n.id, got)
			}
		}
	})
}

func TestStrictForwardsToOwnerAndKeepsReplicasWarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		ns := startNodes(t, net, []string{"a", "b", "c"}, spec("api", cluster.Strict, 10, 4))
		defer closeAll(ns)
		a, b, c := ns[0], ns[1], ns[2]
		key := keyOwnedBy(t, b.coord.View(), "a")

		// Capacity 5, asked 8 times from three nodes: exactly 5 admitted,
		// all decided by a.
		admitted := 0
		for i := range 8 {
			n := ns[i%3]
			ans := n.check(t, "api", key)
			want := cluster.PathOwner
			if n == a {
				want = cluster.PathLocal
			}
			if ans.Path != want {
				t.Fatalf("check %d on %s took path %s, want %s", i, n.id, ans.Path, want)
			}
			if ans.Allowed {
				admitted++
			}
		}
		if admitted != 5 {
			t.Fatalf("admitted %d of capacity 5", admitted)
		}
		st := a.coord.Stats().Limiters["api"]
		if st.Served != 5 || st.Answers[cluster.PathLocal] != 3 {
			t.Fatalf("owner's stats %+v: want 5 served for peers, 3 answered locally", st)
		}
		if got := b.coord.Stats().Limiters["api"].Answers[cluster.PathOwner]; got != 3 {
			t.Fatalf("b counted %d owner answers, want 3", got)
		}
		// The owner gossips what it admitted: replicas are warm.
		settle()
		for _, n := range []*node{b, c} {
			if got := n.remaining(t, "api", key); got != 0 {
				t.Fatalf("replica on %s has %d remaining, want 0 like the owner", n.id, got)
			}
		}
	})
}

func TestStrictKeyMovesToWarmReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		ns := startNodes(t, net, []string{"a", "b", "c"}, spec("api", cluster.Strict, 10, 9))
		defer closeAll(ns[:2])
		a, b, c := ns[0], ns[1], ns[2]
		key := keyOwnedBy(t, a.coord.View(), "c")
		for range 6 {
			if !a.check(t, "api", key).Allowed {
				t.Fatal("denied below the limit")
			}
		}
		settle()
		c.close() // leaves: peers drop it at once
		synctest.Wait()
		if a.coord.Members() != 2 || b.coord.Members() != 2 {
			t.Fatalf("members after c left: a=%d b=%d", a.coord.Members(), b.coord.Members())
		}
		newOwner := a.coord.View().Owner(key)
		ans := a.check(t, "api", key)
		if want := 3; ans.Remaining != want {
			t.Fatalf("new owner %s answered remaining %d, want %d: it did not start from the replica", newOwner, ans.Remaining, want)
		}
	})
}

func TestFailurePolicies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		deadline := 100 * time.Millisecond
		mk := func(name string, f cluster.Failure) limiterSpec {
			s := spec(name, cluster.Strict, 10, 4)
			s.cfg.OnOwnerFailure, s.cfg.OwnerDeadline = f, deadline
			return s
		}
		specs := []limiterSpec{mk("local", cluster.FailLocal), mk("open", cluster.FailOpen), mk("closed", cluster.FailClosed)}
		ns := startNodes(t, net, []string{"a", "b"}, specs...)
		defer closeAll(ns)
		b := ns[1]
		key := keyOwnedBy(t, b.coord.View(), "a")

		net.Pause("a") // a stalls: it neither answers nor heartbeats
		start := time.Now()
		ans := b.check(t, "local", key)
		if waited := time.Since(start); waited != deadline {
			t.Fatalf("fallback after %v, want the owner deadline %v", waited, deadline)
		}
		if ans.Path != cluster.PathFallback || !ans.Allowed || ans.Remaining != 4 {
			t.Fatalf("local policy answered %+v, want a local decision", ans)
		}
		// a is now suspect: the other policies answer at once.
		start = time.Now()
		if ans := b.check(t, "open", key); ans.Path != cluster.PathFallback || !ans.Allowed {
			t.Fatalf("open policy answered %+v", ans)
		}
		if ans := b.check(t, "closed", key); ans.Path != cluster.PathFallback || ans.Allowed || ans.RetryAfter != deadline {
			t.Fatalf("closed policy answered %+v", ans)
		}
		if time.Since(start) != 0 {
			t.Fatalf("a suspect owner was waited for again (%v)", time.Since(start))
		}
		// Locally admitted fallbacks are gossiped: the owner will know.
		if got := b.coord.Stats().Limiters["local"].Answers[cluster.PathFallback]; got != 1 {
			t.Fatalf("fallback answers %d", got)
		}

		// a comes back; its next heartbeat clears the suspicion.
		net.Resume("a")
		time.Sleep(time.Second)
		synctest.Wait()
		if ans := b.check(t, "local", key); ans.Path != cluster.PathOwner {
			t.Fatalf("after a's heartbeat the check took path %s, want owner", ans.Path)
		}
	})
}

func TestHybridLocalFarFromLimitOwnerNearIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		// Capacity 20, threshold 0.5: local while 10 remain after the request.
		ns := startNodes(t, net, []string{"a", "b", "c"}, spec("api", cluster.Hybrid, 10, 19))
		defer closeAll(ns)
		a, b := ns[0], ns[1]
		key := keyOwnedBy(t, a.coord.View(), "a")
		paths := map[cluster.Path]int{}
		admitted := 0
		for range 10 {
			ans := b.check(t, "api", key)
			paths[ans.Path]++
			if ans.Allowed {
				admitted++
			}
		}
		settle() // b's gossip reaches the owner
		for range 15 {
			ans := b.check(t, "api", key)
			paths[ans.Path]++
			if ans.Allowed {
				admitted++
			}
		}
		if paths[cluster.PathLocal] != 10 || paths[cluster.PathOwner] != 15 || admitted != 20 {
			t.Fatalf("paths %v, admitted %d: want 10 local then the owner, 20 admitted", paths, admitted)
		}
	})
}

func TestCatchUpOnStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		s := spec("api", cluster.Strict, 0.1, 9) // no refill worth a request during the test
		ns := startNodes(t, net, []string{"a", "b"}, s)
		defer closeAll(ns)
		a := ns[0]
		for i := range 20 {
			for range 1 + i%4 {
				a.check(t, "api", fmt.Sprintf("key-%d", i))
			}
		}
		settle()
		c := newNode(t, net, "c", s)
		defer c.close()
		if got := c.coord.Stats().CaughtUp; got != 20 {
			t.Fatalf("c caught up %d keys, want 20", got)
		}
		for i := range 20 {
			k := fmt.Sprintf("key-%d", i)
			if got, want := c.remaining(t, "api", k), 10-(1+i%4); got != want {
				t.Fatalf("%s: c starts with %d remaining, want %d", k, got, want)
			}
		}
	})
}

func TestCheckBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		ns := startNodes(t, net, []string{"a", "b", "c"}, spec("api", cluster.Strict, 10, 2))
		defer closeAll(ns)
		a := ns[0]
		v := a.coord.View()
		ka, kb, kc := keyOwnedBy(t, v, "a"), keyOwnedBy(t, v, "b"), keyOwnedBy(t, v, "c")
		reqs := []flux.Request{{Key: ka, Cost: 1}, {Key: kb, Cost: 2}, {Key: "", Cost: 1}, {Key: kc, Cost: 9}, {Key: kc, Cost: 3}, {Key: kb, Cost: 1}}
		out := make([]cluster.Answer, len(reqs))
		errs := make([]error, len(reqs))
		if err := a.coord.CheckBatch(t.Context(), "api", reqs, out, errs); err != nil {
			t.Fatal(err)
		}
		want := []struct {
			path    cluster.Path
			allowed bool
			rem     int
			err     error
		}{
			{cluster.PathLocal, true, 2, nil},
			{cluster.PathOwner, true, 1, nil},
			{err: flux.ErrEmptyKey},
			{err: flux.ErrCostExceedsCapacity},
			{cluster.PathOwner, true, 0, nil},
			{cluster.PathOwner, true, 0, nil},
		}
		for i, w := range want {
			if w.err != nil {
				if !errors.Is(errs[i], w.err) {
					t.Errorf("item %d: error %v, want %v", i, errs[i], w.err)
				}
				continue
			}
			if errs[i] != nil || out[i].Path != w.path || out[i].Allowed != w.allowed || out[i].Remaining != w.rem {
				t.Errorf("item %d: %+v %v, want path %s allowed %v remaining %d", i, out[i], errs[i], w.path, w.allowed, w.rem)
			}
		}
		if st := a.coord.Stats().Forwarder; st.Requests != 2 {
			t.Errorf("%d forward requests for two remote owners, want 2 (coalesced)", st.Requests)
		}
	})
}

func TestConfigErrors(t *testing.T) {
	if _, err := cluster.ParseMode("eventual"); !errors.Is(err, cluster.ErrInvalidConfig) {
		t.Fatalf("ParseMode: %v", err)
	}
	for _, s := range []string{"local", "best-effort", "strict", "hybrid"} {
		if m, err := cluster.ParseMode(s); err != nil || m.String() != s {
			t.Fatalf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	for _, s := range []string{"local", "open", "closed"} {
		if f, err := cluster.ParseFailure(s); err != nil || f.String() != s {
			t.Fatalf("ParseFailure(%q) = %v, %v", s, f, err)
		}
	}
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		b, _ := net.Join("a")
		c, err := cluster.New(b, cluster.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		l, _ := flux.New(flux.Limit{Rate: 1, Burst: 1})
		defer l.Close()
		if err := c.Register("x", l, cluster.LimiterConfig{HybridThreshold: 2}); !errors.Is(err, cluster.ErrInvalidConfig) {
			t.Fatalf("threshold 2: %v", err)
		}
		if _, err := c.Check(context.Background(), "nope", "k", 1); !errors.Is(err, cluster.ErrUnknownLimiter) {
			t.Fatalf("unknown limiter: %v", err)
		}
		_ = c.Close()
		if _, err := c.Check(context.Background(), "x", "k", 1); !errors.Is(err, cluster.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
		if err := c.Start(context.Background()); !errors.Is(err, cluster.ErrClosed) {
			t.Fatalf("Start after Close: %v", err)
		}
	})
}

func TestFingerprintFollowsConfig(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		var mu sync.Mutex
		var mismatches []bus.Event
		mk := func(id string, rate float64, onEvent func(bus.Event)) (*cluster.Coordinator, *flux.Limiter) {
			b, _ := net.Join(id)
			c, err := cluster.New(b, cluster.Config{OnEvent: onEvent})
			if err != nil {
				t.Fatal(err)
			}
			l, _ := flux.New(flux.Limit{Rate: rate, Burst: 1})
			if err := c.Register("api", l, cluster.LimiterConfig{Mode: cluster.Strict}); err != nil {
				t.Fatal(err)
			}
			if err := c.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			return c, l
		}
		a, la := mk("a", 10, func(ev bus.Event) {
			if ev.Kind == bus.Mismatch {
				mu.Lock()
				mismatches = append(mismatches, ev)
				mu.Unlock()
			}
		})
		b, lb := mk("b", 20, nil)
		synctest.Wait()
		defer func() { _ = a.Close(); _ = b.Close(); _ = la.Close(); _ = lb.Close() }()
		mu.Lock()
		if len(mismatches) != 1 || mismatches[0].Node != "b" {
			t.Fatalf("mismatch events %+v", mismatches)
		}
		mu.Unlock()
		if st := a.Stats().Membership; st.Mismatched != 1 || a.Members() != 2 {
			t.Fatalf("stats %+v, members %d", st, a.Members())
		}
		// b is reconfigured to a's limit: the mismatch clears.
		if err := lb.SetLimit(t.Context(), flux.Limit{Rate: 10, Burst: 1}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if st := a.Stats().Membership; st.Mismatched != 0 {
			t.Fatalf("still mismatched after b took a's limit: %+v", st)
		}
	})
}

func TestRegisterReplacesAndUnregisterRemoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		ns := startNodes(t, net, []string{"a", "b"}, spec("api", cluster.Local, 10, 9))
		defer closeAll(ns)
		a, b := ns[0], ns[1]
		a.check(t, "api", "k")
		settle()
		if got := b.remaining(t, "api", "k"); got != 10 {
			t.Fatalf("local mode gossiped: b sees %d remaining", got)
		}
		// Reload: api becomes best-effort on both nodes.
		for _, n := range ns {
			if err := n.coord.Register("api", n.lims["api"], cluster.LimiterConfig{Mode: cluster.BestEffort}); err != nil {
				t.Fatal(err)
			}
		}
		a.check(t, "api", "k")
		settle()
		if got := b.remaining(t, "api", "k"); got != 9 {
			t.Fatalf("after switching to best-effort b sees %d remaining, want 9", got)
		}
		st := a.coord.Stats().Limiters["api"]
		if st.Mode != cluster.BestEffort || st.Answers[cluster.PathLocal] != 2 {
			t.Fatalf("stats after re-registering %+v: want best-effort with both answers counted", st)
		}
		a.coord.Unregister("api")
		if _, err := a.coord.Check(t.Context(), "api", "k", 1); !errors.Is(err, cluster.ErrUnknownLimiter) {
			t.Fatalf("after Unregister: %v", err)
		}
	})
}

func TestHybridBatchCountsEarlierItems(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bus.NewNetwork()
		ns := startNodes(t, net, []string{"a", "b"}, spec("api", cluster.Hybrid, 10, 19))
		defer closeAll(ns)
		b := ns[1]
		key := keyOwnedBy(t, b.coord.View(), "a")
		reqs := make([]flux.Request, 20)
		for i := range reqs {
			reqs[i] = flux.Request{Key: key, Cost: 1}
		}
		out := make([]cluster.Answer, len(reqs))
		if err := b.coord.CheckBatch(t.Context(), "api", reqs, out, make([]error, len(reqs))); err != nil {
			t.Fatal(err)
		}
		paths := map[cluster.Path]int{}
		for _, a := range out {
			paths[a.Path]++
		}
		// Capacity 20, threshold 0.5: the first 10 leave 10 locally, the
		// rest go to the owner although the batch's peek saw 20 for each.
		if paths[cluster.PathLocal] != 10 || paths[cluster.PathOwner] != 10 {
			t.Fatalf("paths %v, want 10 local and 10 owner", paths)
		}
	})
}
