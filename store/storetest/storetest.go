// Package storetest is the conformance suite for store.Store backends.
//
// A backend's test calls Run with a constructor that returns a new, empty
// store isolated from every other test (its own key prefix, schema or
// bucket) and that registers its own cleanup with t.Cleanup:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return newTestStore(t) })
//	}
//
// Run checks the required interface and every optional capability the
// store implements (BatchLoader, Updater, AtomicGCRA, AtomicGCRABatch,
// Pinger, Cleaner). Stores
// given to Run must keep every entry at least a minute after writing it
// (store.DefaultMargin does; the suite's entries are mostly idle an hour
// from now, but its AtomicGCRA sequences run at times far from the
// store's clock) and, if they implement AtomicGCRA, must use the now they
// are given rather than their own clock.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/internal/errs"
	"github.com/fluxlimiter/flux/store"
)

// Run runs the conformance suite as subtests of t. newStore is called once
// per subtest.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Helper()
	t.Run("LoadMissing", func(t *testing.T) { testLoadMissing(t, newStore(t)) })
	t.Run("SaveLoad", func(t *testing.T) { testSaveLoad(t, newStore(t)) })
	t.Run("Overwrite", func(t *testing.T) { testOverwrite(t, newStore(t)) })
	t.Run("DuplicateKeysInBatch", func(t *testing.T) { testDuplicates(t, newStore(t)) })
	t.Run("LimitersAreSeparate", func(t *testing.T) { testLimiters(t, newStore(t)) })
	t.Run("OddKeys", func(t *testing.T) { testOddKeys(t, newStore(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, newStore(t)) })
	t.Run("EmptyBatches", func(t *testing.T) { testEmpty(t, newStore(t)) })
	t.Run("InvalidNames", func(t *testing.T) { testInvalid(t, newStore(t)) })
	t.Run("NoAliasing", func(t *testing.T) { testNoAliasing(t, newStore(t)) })
	t.Run("LargeBatch", func(t *testing.T) { testLargeBatch(t, newStore(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newStore(t)) })
	t.Run("CanceledContext", func(t *testing.T) { testCanceled(t, newStore(t)) })
	t.Run("Close", func(t *testing.T) { testClose(t, newStore(t)) })
	t.Run("BatchLoader", func(t *testing.T) {
		s := newStore(t)
		if _, ok := s.(store.BatchLoader); !ok {
			t.Skip("store does not implement store.BatchLoader")
		}
		testBatchLoader(t, s)
	})
	t.Run("Updater", func(t *testing.T) {
		s := newStore(t)
		if _, ok := s.(store.Updater); !ok {
			t.Skip("store does not implement store.Updater")
		}
		testUpdater(t, s)
	})
	t.Run("AtomicGCRA", func(t *testing.T) {
		s := newStore(t)
		if _, ok := s.(store.AtomicGCRA); !ok {
			t.Skip("store does not implement store.AtomicGCRA")
		}
		testAtomicGCRA(t, s)
	})
	t.Run("AtomicGCRAConcurrent", func(t *testing.T) {
		s := newStore(t)
		if _, ok := s.(store.AtomicGCRA); !ok {
			t.Skip("store does not implement store.AtomicGCRA")
		}
		testAtomicGCRAConcurrent(t, s)
	})
	t.Run("AtomicGCRABatch", func(t *testing.T) {
		s := newStore(t)
		if _, ok := s.(store.AtomicGCRABatch); !ok {
			t.Skip("store does not implement store.AtomicGCRABatch")
		}
		testAtomicGCRABatch(t, s)
	})
	t.Run("Pinger", func(t *testing.T) {
		s := newStore(t)
		p, ok := s.(store.Pinger)
		if !ok {
			t.Skip("store does not implement store.Pinger")
		}
		if err := p.Ping(ctxT(t)); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		_ = s.Close()
		if err := p.Ping(ctxT(t)); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("Ping after Close: %v, want store.ErrClosed", err)
		}
	})
	t.Run("Cleaner", func(t *testing.T) {
		s := newStore(t)
		if _, ok := s.(store.Cleaner); !ok {
			t.Skip("store does not implement store.Cleaner")
		}
		testCleaner(t, s)
	})
}

const lim = "api"

// live is an IdleAt an hour from now: no backend expires it during a test.
func live() int64 { return time.Now().Add(time.Hour).UnixNano() }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustSave(t *testing.T, s store.Store, limiter string, es ...store.Entry) {
	t.Helper()
	if err := s.Save(ctxT(t), limiter, es); err != nil {
		t.Fatalf("Save(%q, %d entries): %v", limiter, len(es), err)
	}
}

func mustLoad(t *testing.T, s store.Store, limiter, key string) (store.Entry, bool) {
	t.Helper()
	e, ok, err := s.Load(ctxT(t), limiter, key)
	if err != nil {
		t.Fatalf("Load(%q, %q): %v", limiter, key, err)
	}
	return e, ok
}

// expect checks that key holds want (or nothing when want is nil).
func expect(t *testing.T, s store.Store, limiter, key string, want *store.Entry) {
	t.Helper()
	e, ok := mustLoad(t, s, limiter, key)
	switch {
	case want == nil && ok:
		t.Fatalf("Load(%q, %q) found %x, want nothing", limiter, key, e.State)
	case want == nil:
	case !ok:
		t.Fatalf("Load(%q, %q) found nothing, want %x", limiter, key, want.State)
	case e.Key != key || !bytes.Equal(e.State, want.State) || e.IdleAt != want.IdleAt:
		t.Fatalf("Load(%q, %q) = {%q %x %d}, want {%q %x %d}", limiter, key, e.Key, e.State, e.IdleAt, key, want.State, want.IdleAt)
	}
}

func testLoadMissing(t *testing.T, s store.Store) {
	expect(t, s, lim, "nobody", nil)
}

func testSaveLoad(t *testing.T, s store.Store) {
	es := []store.Entry{
		{Key: "a", State: []byte{1, 2, 3, 4, 5, 6, 7, 8}, IdleAt: live()},
		{Key: "b", State: []byte("a longer state with \x00 bytes \xff"), IdleAt: store.NoExpiry},
		{Key: "c", State: []byte{}, IdleAt: live()},
		{Key: "d", State: bytes.Repeat([]byte{0xAB}, 4096), IdleAt: live()},
		{Key: "far", State: []byte("idle in 2262"), IdleAt: math.MaxInt64 - 1},
		{Key: "past", State: []byte("idle before 1970"), IdleAt: math.MinInt64},
	}
	mustSave(t, s, lim, es...)
	for i := range es {
		expect(t, s, lim, es[i].Key, &es[i])
	}
	expect(t, s, lim, "e", nil)
}

func testOverwrite(t *testing.T, s store.Store) {
	first := store.Entry{Key: "k", State: []byte("first"), IdleAt: live()}
	second := store.Entry{Key: "k", State: []byte("2nd"), IdleAt: live() + 1}
	mustSave(t, s, lim, first)
	mustSave(t, s, lim, second)
	expect(t, s, lim, "k", &second)
	third := store.Entry{Key: "k", State: []byte("third, never idle"), IdleAt: store.NoExpiry}
	mustSave(t, s, lim, third)
	expect(t, s, lim, "k", &third)
}

func testDuplicates(t *testing.T, s store.Store) {
	last := store.Entry{Key: "k", State: []byte("last"), IdleAt: live() + 2}
	mustSave(t, s, lim,
		store.Entry{Key: "k", State: []byte("one"), IdleAt: live()},
		store.Entry{Key: "j", State: []byte("j"), IdleAt: live()},
		store.Entry{Key: "k", State: []byte("two"), IdleAt: live() + 1},
		last,
	)
	expect(t, s, lim, "k", &last)
}

func testLimiters(t *testing.T, s store.Store) {
	a := store.Entry{Key: "k", State: []byte("A"), IdleAt: live()}
	b := store.Entry{Key: "k", State: []byte("B"), IdleAt: live()}
	// Names chosen so that a naive "limiter:key" layout would collide.
	c := store.Entry{Key: "b:k", State: []byte("C"), IdleAt: live()}
	mustSave(t, s, "a", a)
	mustSave(t, s, "a:b", b)
	mustSave(t, s, "a", c)
	expect(t, s, "a", "k", &a)
	expect(t, s, "a:b", "k", &b)
	expect(t, s, "a", "b:k", &c)
	expect(t, s, "other", "k", nil)
	if err := s.Delete(ctxT(t), "a:b", []string{"k"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	expect(t, s, "a", "k", &a)
	expect(t, s, "a:b", "k", nil)
}

// oddKeys are keys that must round-trip unchanged: separators of every
// backend's key syntax, wildcards, binary and long keys.
var oddKeys = []string{
	"with space", "dots.in.it", ".", "..", "a..b", "trailing.", ":", "a:b:c", "/", "a/b",
	"*", ">", "a.*.>", "%41", "=", "-_=", "UPPER", "upper", "ünïcødé ✓", "\x00", "nul\x00inside",
	"\xff\xfe invalid utf-8", "\n\r\t", "'; DROP TABLE x; --", "{tag}", "$KV.x.y",
	strings.Repeat("k", 1024),
}

var oddLimiters = []string{"api", "API", "with space", "dots.in.it", "a:b", "ünï", "%", "{x}", "$KV.x"}

func testOddKeys(t *testing.T, s store.Store) {
	for li, l := range oddLimiters {
		es := make([]store.Entry, len(oddKeys))
		for i, k := range oddKeys {
			es[i] = store.Entry{Key: k, State: []byte(fmt.Sprintf("%d/%d", li, i)), IdleAt: live()}
		}
		mustSave(t, s, l, es...)
		for i := range es {
			expect(t, s, l, es[i].Key, &es[i])
		}
	}
	// Every key was read back after all were saved: keys that differ
	// only in case or by escaping did not collide.
}

func testDelete(t *testing.T, s store.Store) {
	es := []store.Entry{
		{Key: "a", State: []byte("a"), IdleAt: live()},
		{Key: "b", State: []byte("b"), IdleAt: live()},
		{Key: "c", State: []byte("c"), IdleAt: store.NoExpiry},
	}
	mustSave(t, s, lim, es...)
	if err := s.Delete(ctxT(t), lim, []string{"a", "c", "missing", "a"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	expect(t, s, lim, "a", nil)
	expect(t, s, lim, "b", &es[1])
	expect(t, s, lim, "c", nil)
	// A deleted key can be saved again.
	again := store.Entry{Key: "a", State: []byte("again"), IdleAt: live()}
	mustSave(t, s, lim, again)
	expect(t, s, lim, "a", &again)
}

func testEmpty(t *testing.T, s store.Store) {
	if err := s.Save(ctxT(t), lim, nil); err != nil {
		t.Fatalf("Save(nil): %v", err)
	}
	if err := s.Delete(ctxT(t), lim, nil); err != nil {
		t.Fatalf("Delete(nil): %v", err)
	}
	if bl, ok := s.(store.BatchLoader); ok {
		if err := bl.LoadMany(ctxT(t), lim, nil, nil, nil); err != nil {
			t.Fatalf("LoadMany(nil): %v", err)
		}
	}
}

func testInvalid(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("%s: got %v, want an error wrapping store.ErrInvalidKey", what, err)
		}
	}
	_, found, err := s.Load(ctx, lim, "")
	check("Load empty key", err)
	if found {
		t.Error("Load of an empty key reported found")
	}
	_, _, err = s.Load(ctx, "", "k")
	check("Load empty limiter", err)
	check("Save empty key", s.Save(ctx, lim, []store.Entry{{Key: "ok", State: []byte("x"), IdleAt: live()}, {Key: "", State: []byte("x")}}))
	check("Save empty limiter", s.Save(ctx, "", []store.Entry{{Key: "k", State: []byte("x")}}))
	check("Delete empty key", s.Delete(ctx, lim, []string{""}))
	check("Delete empty limiter", s.Delete(ctx, "", []string{"k"}))
	if bl, ok := s.(store.BatchLoader); ok {
		check("LoadMany empty key", bl.LoadMany(ctx, lim, []string{"k", ""}, make([]store.Entry, 2), make([]bool, 2)))
	}
	if u, ok := s.(store.Updater); ok {
		check("Update empty key", u.Update(ctx, lim, "", func(store.Entry, bool) (store.Entry, bool) { return store.Entry{}, false }))
	}
	if a, ok := s.(store.AtomicGCRA); ok {
		g, _ := algorithm.NewGCRA(1, 1)
		_, err := a.CheckGCRA(ctx, lim, "", g, 0, 1)
		check("CheckGCRA empty key", err)
	}
}

func testNoAliasing(t *testing.T, s store.Store) {
	buf := []byte("original")
	mustSave(t, s, lim, store.Entry{Key: "k", State: buf, IdleAt: live()})
	copy(buf, "CHANGED!")
	e, ok := mustLoad(t, s, lim, "k")
	if !ok || string(e.State) != "original" {
		t.Fatalf("after changing the saved slice, Load = %q, %v; want %q", e.State, ok, "original")
	}
	copy(e.State, "CHANGED!")
	e2, _ := mustLoad(t, s, lim, "k")
	if string(e2.State) != "original" {
		t.Fatalf("after changing a loaded slice, Load = %q; want %q", e2.State, "original")
	}
}

func testLargeBatch(t *testing.T, s store.Store) {
	const n = 2500
	es := make([]store.Entry, n)
	keys := make([]string, n)
	for i := range es {
		keys[i] = fmt.Sprintf("key-%05d", i)
		es[i] = store.Entry{Key: keys[i], State: []byte(keys[i]), IdleAt: live()}
	}
	mustSave(t, s, lim, es...)
	for _, i := range []int{0, 1, n / 2, n - 1} {
		expect(t, s, lim, keys[i], &es[i])
	}
	if bl, ok := s.(store.BatchLoader); ok {
		out, found := make([]store.Entry, n), make([]bool, n)
		if err := bl.LoadMany(ctxT(t), lim, keys, out, found); err != nil {
			t.Fatalf("LoadMany(%d): %v", n, err)
		}
		for i := range keys {
			if !found[i] || string(out[i].State) != keys[i] {
				t.Fatalf("LoadMany[%d] = %q, %v", i, out[i].State, found[i])
			}
		}
	}
	if err := s.Delete(ctxT(t), lim, keys); err != nil {
		t.Fatalf("Delete(%d): %v", n, err)
	}
	for _, i := range []int{0, n - 1} {
		expect(t, s, lim, keys[i], nil)
	}
}

func testConcurrent(t *testing.T, s store.Store) {
	const workers, keys, rounds = 8, 20, 5
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			ctx := ctxT(t)
			for r := range rounds {
				batch := make([]store.Entry, keys)
				for k := range batch {
					key := fmt.Sprintf("w%d-k%d", w, k)
					batch[k] = store.Entry{Key: key, State: []byte(fmt.Sprintf("%s-r%d", key, r)), IdleAt: live()}
				}
				if err := s.Save(ctx, lim, batch); err != nil {
					errc <- err
					return
				}
				for k := range batch {
					e, ok, err := s.Load(ctx, lim, batch[k].Key)
					if err != nil {
						errc <- err
						return
					}
					if !ok || !bytes.Equal(e.State, batch[k].State) {
						errc <- fmt.Errorf("worker %d round %d: Load(%q) = %q, %v; want %q", w, r, batch[k].Key, e.State, ok, batch[k].State)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func testCanceled(t *testing.T, s store.Store) {
	mustSave(t, s, lim, store.Entry{Key: "k", State: []byte("x"), IdleAt: live()})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	start := time.Now()
	_, found, err := s.Load(ctx, lim, "k")
	if err == nil {
		t.Errorf("Load with a canceled context: found=%v, nil error; want an error", found)
	}
	if err := s.Save(ctx, lim, []store.Entry{{Key: "k2", State: []byte("y"), IdleAt: live()}}); err == nil {
		t.Error("Save with a canceled context returned nil")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("calls with a canceled context took %v", d)
	}
}

func testClose(t *testing.T, s store.Store) {
	mustSave(t, s, lim, store.Entry{Key: "k", State: []byte("x"), IdleAt: live()})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := ctxT(t)
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want store.ErrClosed", what, err)
		}
	}
	_, _, err := s.Load(ctx, lim, "k")
	check("Load", err)
	check("Save", s.Save(ctx, lim, []store.Entry{{Key: "k", State: []byte("x"), IdleAt: live()}}))
	check("Delete", s.Delete(ctx, lim, []string{"k"}))
	if bl, ok := s.(store.BatchLoader); ok {
		check("LoadMany", bl.LoadMany(ctx, lim, []string{"k"}, make([]store.Entry, 1), make([]bool, 1)))
	}
	if u, ok := s.(store.Updater); ok {
		check("Update", u.Update(ctx, lim, "k", func(store.Entry, bool) (store.Entry, bool) { return store.Entry{}, false }))
	}
	if a, ok := s.(store.AtomicGCRA); ok {
		g, _ := algorithm.NewGCRA(1, 1)
		_, err := a.CheckGCRA(ctx, lim, "k", g, 0, 1)
		check("CheckGCRA", err)
	}
}

func testBatchLoader(t *testing.T, s store.Store) {
	bl := s.(store.BatchLoader)
	es := []store.Entry{
		{Key: "a", State: []byte("A"), IdleAt: live()},
		{Key: "c", State: []byte("C"), IdleAt: store.NoExpiry},
		{Key: "\x00bin", State: []byte{0}, IdleAt: live()},
	}
	mustSave(t, s, lim, es...)
	keys := []string{"a", "b", "c", "a", "\x00bin", "zzz"}
	out, found := make([]store.Entry, len(keys)+2), make([]bool, len(keys)+2)
	if err := bl.LoadMany(ctxT(t), lim, keys, out, found); err != nil {
		t.Fatalf("LoadMany: %v", err)
	}
	want := []*store.Entry{&es[0], nil, &es[1], &es[0], &es[2], nil}
	for i, w := range want {
		switch {
		case w == nil && found[i]:
			t.Errorf("LoadMany[%d] (%q) found %q, want nothing", i, keys[i], out[i].State)
		case w != nil && (!found[i] || out[i].Key != w.Key || !bytes.Equal(out[i].State, w.State) || out[i].IdleAt != w.IdleAt):
			t.Errorf("LoadMany[%d] = %+v, %v; want %+v", i, out[i], found[i], *w)
		}
	}
	// Short output slices are an error, not a panic.
	if err := bl.LoadMany(ctxT(t), lim, keys, out[:1], found); err == nil {
		t.Error("LoadMany with a short out slice returned nil")
	}
	// Another limiter sees none of them.
	if err := bl.LoadMany(ctxT(t), "other", keys, out, found); err != nil {
		t.Fatalf("LoadMany(other): %v", err)
	}
	for i := range keys {
		if found[i] {
			t.Errorf("LoadMany(other)[%d] found %q", i, out[i].State)
		}
	}
}

func testUpdater(t *testing.T, s store.Store) {
	u := s.(store.Updater)
	ctx := ctxT(t)
	// Missing key: fn sees found=false and the key.
	err := u.Update(ctx, lim, "new", func(cur store.Entry, found bool) (store.Entry, bool) {
		if found || cur.Key != "new" {
			t.Errorf("fn(%+v, %v) for a missing key", cur, found)
		}
		return store.Entry{State: []byte("created"), IdleAt: live()}, true
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	e, ok := mustLoad(t, s, lim, "new")
	if !ok || string(e.State) != "created" {
		t.Fatalf("after Update, Load = %q, %v", e.State, ok)
	}
	// write=false changes nothing.
	err = u.Update(ctx, lim, "new", func(cur store.Entry, found bool) (store.Entry, bool) {
		if !found || string(cur.State) != "created" {
			t.Errorf("fn(%+v, %v), want the created entry", cur, found)
		}
		return store.Entry{State: []byte("ignored")}, false
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if e, _ := mustLoad(t, s, lim, "new"); string(e.State) != "created" {
		t.Fatalf("write=false changed the entry to %q", e.State)
	}
	// Update sees Save's entries and the other way round.
	mustSave(t, s, lim, store.Entry{Key: "ctr", State: []byte{0, 0, 0, 0}, IdleAt: live()})
	// Concurrent increments from many goroutines lose none.
	const workers, each = 8, 15
	var wg sync.WaitGroup
	var calls atomic.Int64
	for range workers {
		wg.Go(func() {
			for range each {
				err := u.Update(ctx, lim, "ctr", func(cur store.Entry, found bool) (store.Entry, bool) {
					calls.Add(1)
					n := 0
					if found && len(cur.State) == 4 {
						n = int(cur.State[0])<<24 | int(cur.State[1])<<16 | int(cur.State[2])<<8 | int(cur.State[3])
					}
					n++
					return store.Entry{State: []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, IdleAt: live()}, true
				})
				if err != nil {
					t.Errorf("Update: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	e, _ = mustLoad(t, s, lim, "ctr")
	if len(e.State) != 4 {
		t.Fatalf("counter state %x", e.State)
	}
	n := int(e.State[0])<<24 | int(e.State[1])<<16 | int(e.State[2])<<8 | int(e.State[3])
	if n != workers*each {
		t.Fatalf("%d concurrent increments left the counter at %d (fn called %d times)", workers*each, n, calls.Load())
	}
}

// gcraCase is one limit the atomic GCRA step is compared on.
type gcraCase struct {
	rate, burst float64
	start       int64 // first now
}

func testAtomicGCRA(t *testing.T, s store.Store) {
	a := s.(store.AtomicGCRA)
	ctx := ctxT(t)
	wall := time.Now().UnixNano()
	cases := []gcraCase{
		{rate: 10, burst: 4, start: wall},
		{rate: 1000, burst: 0, start: wall},
		{rate: 0.5, burst: 2.5, start: wall},
		{rate: 3, burst: 7.25, start: wall},
		{rate: 1e9, burst: 20, start: wall},
		{rate: 1.0 / 86400, burst: 999, start: wall},           // a daily allowance: T = 1 day
		{rate: 7, burst: 3, start: -1_500_000_000_123_456_789}, // before 1970: negative TATs
		{rate: 7, burst: 3, start: -3},                         // straddling zero
		{rate: 100, burst: 5, start: 1<<62 + 12345},            // far future
	}
	for ci, c := range cases {
		g, err := algorithm.NewGCRA(c.rate, c.burst)
		if err != nil {
			t.Fatalf("NewGCRA(%v, %v): %v", c.rate, c.burst, err)
		}
		key := fmt.Sprintf("seq-%d", ci)
		rng := rand.New(rand.NewPCG(uint64(ci), 42))
		tat := g.Fresh(c.start)
		now := c.start
		allowed := 0
		for i := range 120 {
			// Mostly forward in time by up to ~2 intervals, sometimes a
			// burst at the same instant, sometimes a step back (skew).
			switch r := rng.IntN(10); {
			case r < 3:
			case r < 9:
				now += rng.Int64N(2*g.Interval() + 1)
			default:
				now -= rng.Int64N(g.Interval()/2 + 1)
			}
			cost := rng.Int64N(min(g.Capacity(), 4) + 1) // includes peeks
			var want algorithm.Decision
			tat, want, _ = g.Step(tat, now, cost)
			got, err := a.CheckGCRA(ctx, lim, key, g, now, cost)
			if err != nil {
				t.Fatalf("case %d step %d: CheckGCRA(now=%d, cost=%d): %v", ci, i, now, cost, err)
			}
			if got != want {
				t.Fatalf("case %d (rate %v burst %v) step %d: CheckGCRA(now=%d, cost=%d) = %+v, algorithm.GCRA says %+v",
					ci, c.rate, c.burst, i, now, cost, got, want)
			}
			if want.Allowed && cost > 0 {
				allowed++
			}
		}
		if allowed == 0 {
			t.Errorf("case %d admitted nothing: the sequence tests too little", ci)
		}
	}

	g, _ := algorithm.NewGCRA(10, 4)
	// A peek consumes nothing.
	for range 3 {
		d, err := a.CheckGCRA(ctx, lim, "peek", g, wall, 0)
		if err != nil || !d.Allowed || d.Remaining != 5 {
			t.Fatalf("peek = %+v, %v; want allowed with 5 remaining", d, err)
		}
	}
	// Records are separate from Load/Save, and per limiter.
	if _, err := a.CheckGCRA(ctx, lim, "sep", g, wall, 5); err != nil {
		t.Fatal(err)
	}
	expect(t, s, lim, "sep", nil)
	if d, err := a.CheckGCRA(ctx, "other", "sep", g, wall, 1); err != nil || !d.Allowed || d.Remaining != 4 {
		t.Fatalf("other limiter: %+v, %v; want a fresh key", d, err)
	}
	if d, err := a.CheckGCRA(ctx, lim, "sep", g, wall, 1); err != nil || d.Allowed {
		t.Fatalf("drained key: %+v, %v; want a denial", d, err)
	}
	// Bad arguments are errors, not panics or denials.
	if _, err := a.CheckGCRA(ctx, lim, "bad", g, wall, -1); !errors.Is(err, errs.InvalidCost) {
		t.Errorf("cost -1: %v, want ErrInvalidCost", err)
	}
	if _, err := a.CheckGCRA(ctx, lim, "bad", g, wall, 6); !errors.Is(err, errs.CostExceedsBurst) {
		t.Errorf("cost 6 > capacity 5: %v, want ErrCostExceedsBurst", err)
	}
	if _, err := a.CheckGCRA(ctx, lim, "bad", algorithm.GCRA{}, wall, 1); !errors.Is(err, errs.InvalidRate) {
		t.Errorf("zero GCRA: %v, want ErrInvalidRate", err)
	}
}

func testAtomicGCRAConcurrent(t *testing.T, s store.Store) {
	g, _ := algorithm.NewGCRA(50, 9) // capacity 10, one more every 20 ms
	SharedExact(t, []store.AtomicGCRA{s.(store.AtomicGCRA)}, g, 8, 6, 4, 3)
}

// SharedExact checks that stores of one backend (one, or several clients,
// pools or connections sharing its data) decide one key together exactly.
// At each of steps instants, goroutines goroutines per store each send
// perGoroutine cost-1 checks of the key, all at the same now; the stores
// must admit in total what algorithm.GCRA admits for that many requests
// at that instant (for cost 1 the count does not depend on the order).
// Between instants now advances by advance emission intervals of g. Every
// instant must saturate the key, so that the total is g's capacity plus
// advance per later instant.
func SharedExact(t *testing.T, stores []store.AtomicGCRA, g algorithm.GCRA, goroutines, perGoroutine, steps, advance int) {
	t.Helper()
	ctx := ctxT(t)
	now := time.Now().UnixNano()
	tat := g.Fresh(now)
	total := 0
	for step := range steps {
		want := 0
		for range len(stores) * goroutines * perGoroutine {
			var d algorithm.Decision
			tat, d, _ = g.Step(tat, now, 1)
			if d.Allowed {
				want++
			}
		}
		var got atomic.Int64
		var wg sync.WaitGroup
		for _, a := range stores {
			for range goroutines {
				wg.Go(func() {
					for range perGoroutine {
						d, err := a.CheckGCRA(ctx, lim, "hot", g, now, 1)
						if err != nil {
							t.Errorf("CheckGCRA: %v", err)
							return
						}
						if d.Allowed {
							got.Add(1)
						}
					}
				})
			}
		}
		wg.Wait()
		if int(got.Load()) != want {
			t.Fatalf("step %d: %d stores × %d goroutines × %d checks admitted %d, algorithm.GCRA admits %d",
				step, len(stores), goroutines, perGoroutine, got.Load(), want)
		}
		total += want
		now += int64(advance) * g.Interval()
	}
	if w := int(g.Capacity()) + advance*(steps-1); total != w {
		t.Fatalf("admitted %d in total, want %d: the parameters do not saturate the key", total, w)
	}
}

// ServerTimeBound checks stores of one backend configured to read the
// backend's own clock (they are given now = 0): goroutines goroutines per
// store hammer one key for d, and together they never admit more than g's
// capacity plus one per emission interval elapsed (and one for rounding);
// every denial carries a RetryAfter in (0, T].
func ServerTimeBound(t *testing.T, stores []store.AtomicGCRA, g algorithm.GCRA, goroutines int, d time.Duration) {
	t.Helper()
	ctx := ctxT(t)
	interval := time.Duration(g.Interval())
	start := time.Now()
	stop := start.Add(d)
	var got, denied atomic.Int64
	var wg sync.WaitGroup
	for _, a := range stores {
		for range goroutines {
			wg.Go(func() {
				for time.Now().Before(stop) {
					// now is 0: the backend's clock decides.
					dec, err := a.CheckGCRA(ctx, lim, "hot", g, 0, 1)
					if err != nil {
						t.Errorf("CheckGCRA: %v", err)
						return
					}
					if dec.Allowed {
						got.Add(1)
						continue
					}
					denied.Add(1)
					if dec.RetryAfter <= 0 || dec.RetryAfter > interval {
						t.Errorf("denied with RetryAfter %v, want in (0, %v]", dec.RetryAfter, interval)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	limit := g.Capacity() + int64(elapsed/interval) + 1
	if got.Load() > limit {
		t.Fatalf("admitted %d in %v, limit %d", got.Load(), elapsed, limit)
	}
	if got.Load() < g.Capacity() || denied.Load() == 0 {
		t.Fatalf("admitted %d, denied %d: the test did not saturate the key", got.Load(), denied.Load())
	}
}

// Unreachable checks a store whose backend cannot be reached (a closed
// port, a server that never answers): Load, Save and, if the store has it,
// CheckGCRA each fail when given a context with the deadline, within
// `within` of being called, and Load never reports a key found.
func Unreachable(t *testing.T, s store.Store, deadline, within time.Duration) {
	t.Helper()
	g, _ := algorithm.NewGCRA(1, 1)
	ops := map[string]func(ctx context.Context) error{
		"Load": func(ctx context.Context) error {
			_, found, err := s.Load(ctx, "l", "k")
			if found {
				t.Error("Load reported found")
			}
			return err
		},
		"Save": func(ctx context.Context) error {
			return s.Save(ctx, "l", []store.Entry{{Key: "k", State: []byte("x"), IdleAt: store.NoExpiry}})
		},
	}
	if a, ok := s.(store.AtomicGCRA); ok {
		ops["CheckGCRA"] = func(ctx context.Context) error {
			_, err := a.CheckGCRA(ctx, "l", "k", g, 0, 1)
			return err
		}
	}
	for name, op := range ops {
		ctx, cancel := context.WithTimeout(t.Context(), deadline)
		start := time.Now()
		err := op(ctx)
		cancel()
		d := time.Since(start)
		if err == nil {
			t.Errorf("%s: nil error", name)
		}
		if d > within {
			t.Errorf("%s took %v, want ≤ %v", name, d, within)
		}
		t.Logf("%s: %v after %v", name, err, d)
	}
}

func testAtomicGCRABatch(t *testing.T, s store.Store) {
	a := s.(store.AtomicGCRABatch)
	ctx := ctxT(t)
	g, _ := algorithm.NewGCRA(10, 3) // capacity 4, T = 100 ms
	now := time.Now().UnixNano()
	// In order, a key may repeat; bad items fail alone.
	keys := []string{"a", "b", "a", "a", "", "a", "b", "c", "a", "b", "c", "c"}
	costs := []int64{1, 4, 2, 0, 1, 1, 1, -1, 1, 0, 5, 3}
	tats := map[string]int64{}
	want := make([]algorithm.Decision, len(keys))
	wantErr := make([]bool, len(keys))
	step := func(now int64) {
		for i, k := range keys {
			if k == "" || costs[i] < 0 || costs[i] > g.Capacity() {
				wantErr[i] = true
				continue
			}
			tat, ok := tats[k]
			if !ok {
				tat = g.Fresh(now)
			}
			tats[k], want[i], _ = g.Step(tat, now, costs[i])
		}
	}
	for round := range 3 {
		step(now)
		out, errs := make([]algorithm.Decision, len(keys)), make([]error, len(keys))
		if err := a.CheckGCRABatch(ctx, lim, g, now, keys, costs, out, errs); err != nil {
			t.Fatalf("round %d: CheckGCRABatch: %v", round, err)
		}
		for i := range keys {
			switch {
			case wantErr[i] && errs[i] == nil:
				t.Errorf("round %d item %d (%q, cost %d): no error", round, i, keys[i], costs[i])
			case !wantErr[i] && errs[i] != nil:
				t.Errorf("round %d item %d: %v", round, i, errs[i])
			case !wantErr[i] && out[i] != want[i]:
				t.Errorf("round %d item %d (%q, cost %d) = %+v, algorithm.GCRA says %+v", round, i, keys[i], costs[i], out[i], want[i])
			}
		}
		now += 3 * g.Interval()
	}
	// The batch and single checks share records.
	d, err := s.(store.AtomicGCRA).CheckGCRA(ctx, lim, "a", g, now, 0)
	_, wantPeek, _ := g.Step(tats["a"], now, 0)
	if err != nil || d != wantPeek {
		t.Fatalf("CheckGCRA after the batches = %+v, %v; want %+v", d, err, wantPeek)
	}
	// Short slices are an error, not a panic.
	if err := a.CheckGCRABatch(ctx, lim, g, now, keys, costs[:1], make([]algorithm.Decision, len(keys)), make([]error, len(keys))); err == nil {
		t.Error("CheckGCRABatch with short costs returned nil")
	}
	if err := a.CheckGCRABatch(ctx, lim, g, now, nil, nil, nil, nil); err != nil {
		t.Errorf("empty CheckGCRABatch: %v", err)
	}
}

func testCleaner(t *testing.T, s store.Store) {
	c := s.(store.Cleaner)
	keep := []store.Entry{
		{Key: "live", State: []byte("l"), IdleAt: live()},
		{Key: "forever", State: []byte("f"), IdleAt: store.NoExpiry},
	}
	mustSave(t, s, lim, keep...)
	if _, err := c.Cleanup(ctxT(t)); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	for i := range keep {
		expect(t, s, lim, keep[i].Key, &keep[i])
	}
}
