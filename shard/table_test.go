package shard

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"testing"
)

// checkTable compares t with the model and checks its invariants.
func checkTable(t *testing.T, tb *table[int64], model map[string]int64) {
	t.Helper()
	if tb.len() != len(model) {
		t.Fatalf("len %d, model %d", tb.len(), len(model))
	}
	for k, v := range model {
		p := tb.get(k)
		if p == nil || *p != v {
			t.Fatalf("get(%q) = %v, want %d", k, p, v)
		}
	}
	seen := 0
	for k, p := range tb.all() {
		if v, ok := model[k]; !ok || v != *p {
			t.Fatalf("all yields %q=%d, model has %d (%v)", k, *p, v, ok)
		}
		seen++
	}
	if seen != len(model) {
		t.Fatalf("all yields %d entries, want %d", seen, len(model))
	}
	used := 0
	for i, st := range tb.dir {
		if st.index > i || tb.dir[st.index] != st {
			t.Fatalf("dir[%d]: subtable index %d", i, st.index)
		}
		if st.index != i {
			continue
		}
		if span := 1 << (tb.depth - st.depth); st.index%span != 0 {
			t.Fatalf("subtable at %d misaligned for span %d", st.index, span)
		}
		full, empty := 0, 0
		for gi := range st.groups {
			for j := range groupSlots {
				switch c := st.groups[gi].ctrl.get(j); {
				case c == ctrlEmpty:
					empty++
				case c == ctrlDeleted:
				case c&0x80 == 0:
					full++
				default:
					t.Fatalf("bad control byte %#x", c)
				}
			}
		}
		if full != st.used {
			t.Fatalf("subtable used %d, counted %d", st.used, full)
		}
		if empty != st.growthLeft+st.slots()/8 {
			t.Fatalf("subtable empties %d, growthLeft %d, slots %d", empty, st.growthLeft, st.slots())
		}
		used += full
	}
	if used != tb.used {
		t.Fatalf("table used %d, subtables hold %d", tb.used, used)
	}
}

func TestTableDifferential(t *testing.T) {
	for _, keys := range []int{10, 300, 5000, 40_000} {
		t.Run(fmt.Sprint(keys), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(keys), 7))
			tb := newTable[int64](maphash.MakeSeed())
			model := map[string]int64{}
			ops := 20 * keys
			for op := range ops {
				k := fmt.Sprintf("k%d", rng.IntN(keys))
				switch r := rng.IntN(10); {
				case r < 5: // insert or update
					if p := tb.get(k); p != nil {
						*p = int64(op)
					} else {
						tb.insert(k, int64(op))
					}
					model[k] = int64(op)
				case r < 8:
					_, had := model[k]
					if got := tb.delete(k); got != had {
						t.Fatalf("delete(%q) = %v, want %v", k, got, had)
					}
					delete(model, k)
				default:
					p := tb.get(k)
					if v, ok := model[k]; ok != (p != nil) || (ok && *p != v) {
						t.Fatalf("get(%q) = %v, model %d %v", k, p, v, ok)
					}
				}
				if op%(ops/10) == 0 {
					checkTable(t, tb, model)
				}
			}
			checkTable(t, tb, model)
			// Delete everything through the iterator, as a limit change
			// dropping idle keys does.
			for k := range tb.all() {
				tb.delete(k)
				delete(model, k)
			}
			checkTable(t, tb, model)
		})
	}
}

// A paused pass visits every key held throughout it at least once, and
// only keys held when visited, while inserts rebuild and split subtables
// and deletes leave tombstones between its steps.
func TestTableCursorSurvivesGrowth(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tb := newTable[int64](maphash.MakeSeed())
	next := 0
	add := func() {
		k := fmt.Sprintf("key-%d", next)
		next++
		tb.insert(k, int64(next))
	}
	for range 3000 {
		add()
	}
	for pass := range 5 {
		initial := map[string]bool{}
		for k := range tb.all() {
			initial[k] = true
		}
		deleted := map[string]bool{}
		visited := map[string]int{}
		splits := len(tb.dir)
		var c cursor[int64]
		for {
			k, v, ok := c.next(tb)
			if !ok {
				break
			}
			if tb.get(k) != v {
				t.Fatalf("pass %d: cursor yields %q not held at that slot", pass, k)
			}
			visited[k]++
			// Between steps: grow (forcing rebuilds and splits), and
			// delete a key, sometimes one not yet visited.
			if rng.IntN(10) == 0 {
				for range 3 {
					add()
				}
			}
			if rng.IntN(5) == 0 {
				k := fmt.Sprintf("key-%d", rng.IntN(next))
				if initial[k] && !deleted[k] && visited[k] == 0 {
					tb.delete(k)
					deleted[k] = true
				}
			}
			tb.compact(4) // as a sweep tick does after its deletions
		}
		if len(tb.dir) == splits && pass == 0 {
			t.Fatal("the directory never grew during a pass: the test does not exercise splits")
		}
		for k := range initial {
			if !deleted[k] && visited[k] == 0 {
				t.Fatalf("pass %d: key %q held throughout was never visited", pass, k)
			}
		}
		for k := range deleted {
			if visited[k] > 0 {
				t.Fatalf("pass %d: deleted key %q was visited", pass, k)
			}
		}
	}
}

func TestTableDeleteThenReinsertKeepsProbesWorking(t *testing.T) {
	tb := newTable[int64](maphash.MakeSeed())
	model := map[string]int64{}
	// Churn a small key set for long enough that tombstones would fill a
	// subtable if rebuilds did not clear them.
	for i := range 200_000 {
		k := fmt.Sprintf("c%d", i%97)
		if tb.get(k) != nil {
			tb.delete(k)
			delete(model, k)
		} else {
			tb.insert(k, int64(i))
			model[k] = int64(i)
		}
	}
	checkTable(t, tb, model)
	if n := len(tb.dir); n > 4 {
		t.Fatalf("97 churning keys grew the directory to %d entries", n)
	}
}

// slots counts the slots of every subtable.
func slots[S any](tb *table[S]) int {
	n := 0
	for i, st := range tb.dir {
		if st.index == i {
			n += st.slots()
		}
	}
	return n
}

// A surge of keys, then their deletion: compaction gives the memory back,
// a few subtables per call, and the table stays correct throughout.
func TestTableCompactsAfterASurge(t *testing.T) {
	tb := newTable[int64](maphash.MakeSeed())
	model := map[string]int64{}
	for i := range 100_000 {
		k := fmt.Sprintf("spray-%d", i)
		tb.insert(k, int64(i))
		model[k] = int64(i)
	}
	peak := slots(tb)
	// Keep one key in 500, delete the rest through a paused pass, as the
	// sweep does, compacting after each step.
	var c cursor[int64]
	for {
		k, _, ok := c.next(tb)
		if !ok {
			break
		}
		var i int
		fmt.Sscanf(k, "spray-%d", &i)
		if i%500 != 0 {
			tb.delete(k)
			delete(model, k)
		}
		tb.compact(2)
	}
	for tb.compact(16) {
	}
	checkTable(t, tb, model)
	after := slots(tb)
	// 200 keys left; each subtable shrinks to the smallest size holding
	// its share at most 7/16 full.
	if after*20 > peak {
		t.Fatalf("%d slots after deleting 99.8%% of the keys, %d at the peak: not compacted", after, peak)
	}
	if len(tb.sparse) != 0 {
		t.Fatalf("%d subtables still queued", len(tb.sparse))
	}
	// The compacted table keeps working, growing again.
	for i := range 50_000 {
		k := fmt.Sprintf("again-%d", i)
		tb.insert(k, 1)
		model[k] = 1
	}
	checkTable(t, tb, model)
}

func TestShrinkSize(t *testing.T) {
	for used := range 2000 {
		n := shrinkSize(used)
		if n < groupSlots || n&(n-1) != 0 || n*7/16 < used || (n > groupSlots && (n/2)*7/16 >= used) {
			t.Fatalf("shrinkSize(%d) = %d", used, n)
		}
	}
}

func BenchmarkTableGet(b *testing.B) {
	keys := make([]string, 10_000)
	tb := newTable[int64](maphash.MakeSeed())
	m := map[string]*int64{}
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%05d", i)
		tb.insert(keys[i], 1)
		m[keys[i]] = new(int64)
	}
	b.Run("table", func(b *testing.B) {
		i := 0
		for b.Loop() {
			*tb.get(keys[i%len(keys)])++
			i += 7
		}
	})
	b.Run("map", func(b *testing.B) {
		i := 0
		for b.Loop() {
			*m[keys[i%len(keys)]]++
			i += 7
		}
	})
}
