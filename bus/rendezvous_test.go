package bus

import (
	"fmt"
	"testing"
)

func keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("user:%d", i)
	}
	return ks
}

// TestRendezvousPinned pins owners computed once: every node and every
// release must agree on them, so a change here breaks mixed-version
// clusters and needs a protocol version bump.
func TestRendezvousPinned(t *testing.T) {
	v := NewView("node-a", "node-b", "node-c")
	got := ""
	for _, k := range []string{"user:0", "user:1", "user:2", "user:3", "ip:10.0.0.1", ""} {
		got += v.Owner(k) + " "
	}
	const want = "node-c node-c node-b node-a node-a node-c "
	if got != want {
		t.Fatalf("owners changed:\n got  %s\n want %s", got, want)
	}
	if NewView().Owner("x") != "" {
		t.Fatal("an empty view owns keys")
	}
}

func TestRendezvousBalanceAndStability(t *testing.T) {
	ks := keys(30000)
	v3 := NewView("n1", "n2", "n3")
	count := map[string]int{}
	for _, k := range ks {
		count[v3.Owner(k)]++
	}
	for n, c := range count {
		if c < 9000 || c > 11000 { // 10000 expected; binomial σ ≈ 82
			t.Errorf("%s owns %d of 30000 keys", n, c)
		}
	}

	// A node leaving moves only its own keys.
	v2 := v3.Without("n2")
	for _, k := range ks {
		before, after := v3.Owner(k), v2.Owner(k)
		if before != "n2" && before != after {
			t.Fatalf("key %s moved from %s to %s though %s stayed", k, before, after, before)
		}
		if after == "n2" {
			t.Fatalf("key %s still owned by the departed node", k)
		}
	}

	// A node joining takes about a quarter of the keys, from each alike,
	// and moves no key between the others.
	v4 := NewView("n1", "n2", "n3", "n4")
	moved := map[string]int{}
	for _, k := range ks {
		before, after := v3.Owner(k), v4.Owner(k)
		if before == after {
			continue
		}
		if after != "n4" {
			t.Fatalf("key %s moved from %s to %s, not to the newcomer", k, before, after)
		}
		moved[before]++
	}
	total := moved["n1"] + moved["n2"] + moved["n3"]
	if total < 6900 || total > 8100 { // 7500 expected
		t.Errorf("%d keys moved to the newcomer, want about 7500", total)
	}
	for n, c := range moved {
		if c < 2100 || c > 2900 {
			t.Errorf("newcomer took %d keys from %s, want about 2500", c, n)
		}
	}
}

func TestViewBasics(t *testing.T) {
	v := NewView("b", "a", "b")
	if v.Len() != 2 || !v.Contains("a") || v.Contains("c") || v.Nodes()[0] != "a" {
		t.Fatalf("view %v", v.Nodes())
	}
	if v.Without("c") != v || v.Without("a").Len() != 1 || v.Len() != 2 {
		t.Fatal("Without changed the view it was called on or did not remove")
	}
}

func BenchmarkOwner(b *testing.B) {
	v := NewView("n1", "n2", "n3")
	for b.Loop() {
		_ = v.Owner("user:12345")
	}
}
