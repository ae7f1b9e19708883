package shard

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/memstore"
)

// faultStore wraps a store: it counts calls, and while hanging it answers
// none until the caller's context ends, as a silent server.
type faultStore struct {
	store.Store
	hang     atomic.Bool
	hangNext atomic.Int32 // hang only the next calls
	calls    atomic.Int64
}

func (f *faultStore) wait(ctx context.Context) error {
	f.calls.Add(1)
	if f.hang.Load() || f.hangNext.Add(-1) >= 0 {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (f *faultStore) Load(ctx context.Context, limiter, key string) (store.Entry, bool, error) {
	if err := f.wait(ctx); err != nil {
		return store.Entry{}, false, err
	}
	return f.Store.Load(ctx, limiter, key)
}

func (f *faultStore) Save(ctx context.Context, limiter string, entries []store.Entry) error {
	if err := f.wait(ctx); err != nil {
		return err
	}
	return f.Store.Save(ctx, limiter, entries)
}

func (f *faultStore) Delete(ctx context.Context, limiter string, keys []string) error {
	if err := f.wait(ctx); err != nil {
		return err
	}
	return f.Store.Delete(ctx, limiter, keys)
}

const (
	testTimeout = 50 * time.Millisecond
	testFlush   = 100 * time.Millisecond
	testRetry   = 7 * time.Second
)

// storeShard starts a shard of capacity 5 (1/s, burst 4) on st, on
// synctest's fake time, sweeping every second.
func storeShard(t *testing.T, st store.Store, policy Failure, through bool) *Shard[int64] {
	clk := clock.Func(func() (int64, error) { return time.Now().UnixNano(), nil })
	s := New(Config[int64]{Algorithm: gcra(t, 1, 4), Clock: clk, SweepEvery: time.Second, Persistence: &Persistence{
		Store: st, Limiter: "api", Through: through, FlushEvery: testFlush, Timeout: testTimeout,
		OnFailure: policy, RetryAfter: testRetry,
	}})
	t.Cleanup(s.Stop)
	return s
}

// While the store is down, a key this shard decided and then forgot
// because it was back at full allowance is decided from memory as a fresh
// key under local and open (capacity enforced: never more than this
// shard's own limit), and denied under closed; a throttled key is never
// forgiven; a key never seen is denied under local and closed. Saving
// resumes when the store is back.
func TestOutageDecidesForgottenKeysFromMemory(t *testing.T) {
	for _, through := range []bool{false, true} {
		for _, policy := range []Failure{FailLocal, FailOpen, FailClosed} {
			t.Run(fmt.Sprintf("%v/through=%v", policy, through), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					ms := memstore.New(memstore.Options{Clock: clock.Func(func() (int64, error) { return time.Now().UnixNano(), nil })})
					st := &faultStore{Store: ms}
					s := storeShard(t, st, policy, through)
					ctx := context.Background()
					check := func(key string, cost int64) (allowed, byPolicy bool) {
						t.Helper()
						d, err := s.Check(ctx, key, cost)
						if err != nil {
							t.Fatalf("%s: %v", key, err)
						}
						return d.Allowed, !d.Allowed && d.RetryAfter == testRetry
					}
					if ok, _ := check("honest", 1); !ok {
						t.Fatal("honest denied with the store up")
					}
					if ok, _ := check("peeked", 0); !ok {
						t.Fatal("peek denied with the store up")
					}
					time.Sleep(1500 * time.Millisecond) // the sweep forgets honest
					synctest.Wait()
					if s.Len() != 0 || s.Stats().Swept != 1 {
						t.Fatalf("%d keys held, %d swept; want honest swept", s.Len(), s.Stats().Swept)
					}
					for range 5 {
						check("spent", 1)
					}
					ms.Fail(errors.New("store down"))
					if ok, _ := check("spent", 1); ok {
						t.Fatal("a throttled key was admitted with the store down")
					}
					honest, byPolicy := check("honest", 1)
					switch policy {
					case FailClosed:
						if honest || !byPolicy {
							t.Fatal("closed: a forgotten key was not denied by the policy")
						}
					default:
						if !honest {
							t.Fatalf("%v: a key decided since start and forgotten as fresh was denied", policy)
						}
						n := 1
						for {
							ok, byPolicy := check("honest", 1)
							if !ok {
								if byPolicy {
									t.Fatal("a key decided from memory was denied by the policy")
								}
								break
							}
							n++
						}
						if n != 5 {
							t.Fatalf("%v: %d admitted from memory; want the capacity, 5", policy, n)
						}
						if ok, _ := check("peeked", 1); !ok {
							t.Fatalf("%v: a key loaded as fresh (by a peek) was denied", policy)
						}
					}
					never, byPolicy := check("never", 1)
					if never != (policy == FailOpen) || !never && !byPolicy {
						t.Fatalf("%v: a key never seen: allowed=%v", policy, never)
					}

					ms.Recover()
					// Saving resumes: under local and open, honest's
					// admissions made during the outage reach the store.
					for range 50 {
						time.Sleep(testFlush)
						check("after", 1)
						synctest.Wait()
						if e, found, err := ms.Load(ctx, "api", "after"); err == nil && found && e.IdleAt > 0 {
							break
						}
					}
					if e, found, err := ms.Load(ctx, "api", "after"); err != nil || !found {
						t.Fatalf("saving did not resume: %+v %v %v; stats %+v", e, found, err, s.StoreStats())
					}
					if policy != FailClosed {
						if e, found, err := ms.Load(ctx, "api", "honest"); err != nil || !found {
							t.Fatalf("honest's admissions during the outage were not saved: %+v %v %v", e, found, err)
						}
					}
				})
			})
		}
	}
}

// A store that hangs: the requests waiting for it when it stops answering
// wait at most the timeout; from then on no request waits for it (every
// one is decided by the policy at once) and it is called only by one probe
// per flush interval; once a probe succeeds, keys load again.
func TestOutageFailsFastWhileDown(t *testing.T) {
	for _, through := range []bool{false, true} {
		t.Run(fmt.Sprintf("through=%v", through), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ms := memstore.New(memstore.Options{Clock: clock.Func(func() (int64, error) { return time.Now().UnixNano(), nil })})
				st := &faultStore{Store: ms}
				s := storeShard(t, st, FailLocal, through)
				ctx := context.Background()
				timed := func(key string) (time.Duration, bool) {
					t.Helper()
					start := time.Now()
					d, err := s.Check(ctx, key, 1)
					if err != nil {
						t.Fatal(err)
					}
					return time.Since(start), d.Allowed
				}
				timed("held")
				st.hang.Store(true)
				// Ten keys miss at once: each waits for its load, none longer
				// than the timeout, and when the first fails the others are
				// answered too.
				took := make(chan time.Duration, 10)
				for i := range 10 {
					go func() {
						el, _ := timed(fmt.Sprint("first", i))
						took <- el
					}()
				}
				for range 10 {
					if el := <-took; el > testTimeout {
						t.Fatalf("a request waited %v for a silent store (timeout %v)", el, testTimeout)
					}
				}
				calls := st.calls.Load()
				for i := range 1000 {
					if el, _ := timed(fmt.Sprint("more", i)); el != 0 {
						t.Fatalf("a request waited %v for a store known to be down", el)
					}
					if el, ok := timed("held"); el != 0 || !ok && i == 0 {
						t.Fatalf("a held key waited %v (allowed %v)", el, ok)
					}
				}
				if n := st.calls.Load() - calls; n != 0 {
					t.Fatalf("%d store calls for requests while the store was known down", n)
				}
				time.Sleep(time.Second)
				synctest.Wait()
				if n := st.calls.Load() - calls; n < 5 || n > 11 {
					t.Fatalf("%d store calls in a second of outage; want one probe per flush interval (10)", n)
				}
				st.hang.Store(false)
				time.Sleep(2 * testFlush)
				synctest.Wait()
				calls = st.calls.Load()
				if _, ok := timed("back"); !ok {
					t.Fatal("a new key denied once the store was back")
				}
				if st.calls.Load() == calls {
					t.Fatal("a new key was not loaded once the store was back")
				}
			})
		})
	}
}

// A write-behind flush that fails as the shard stops (here: the store
// hangs past the timeout) leaves its keys to the final flush: stopping
// loses nothing the store takes.
func TestStopSavesWhatAFailedFlushHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := memstore.New(memstore.Options{Clock: clock.Func(func() (int64, error) { return time.Now().UnixNano(), nil })})
		st := &faultStore{Store: ms}
		s := storeShard(t, st, FailLocal, false)
		if _, err := s.Check(context.Background(), "alice", 5); err != nil {
			t.Fatal(err)
		}
		st.hangNext.Store(1)
		time.Sleep(testFlush + testTimeout/2) // the flush is in flight, hanging
		s.Stop()
		if _, found, err := ms.Load(context.Background(), "api", "alice"); err != nil || !found {
			t.Fatalf("alice was not saved when the shard stopped: %v %v; stats %+v", found, err, s.StoreStats())
		}
	})
}
