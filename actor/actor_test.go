package actor

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux/internal/errs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// msg is a test message: op says what the handler does, reply gets the answer.
type msg struct {
	op    string
	reply chan error
}

func (m msg) Fail(err error) {
	select {
	case m.reply <- err:
	default:
	}
}

func ask(t *testing.T, a *Actor[msg], op string) error {
	t.Helper()
	rc := make(chan error, 1)
	if err := a.Send(t.Context(), msg{op: op, reply: rc}); err != nil {
		return err
	}
	select {
	case err := <-rc:
		return err
	case <-a.Done():
		return errs.Closed
	}
}

func handler(served *atomic.Int64) func(msg) {
	return func(m msg) {
		switch m.op {
		case "panic":
			panic("handler exploded")
		default:
			served.Add(1)
			m.reply <- nil
		}
	}
}

func TestPanicIsContained(t *testing.T) {
	var served atomic.Int64
	var panics atomic.Int64
	a := Start(Config[msg]{Mailbox: 4, Handle: handler(&served), OnPanic: func(any) { panics.Add(1) }})
	defer a.Stop()
	if err := ask(t, a, "ok"); err != nil {
		t.Fatal(err)
	}
	err := ask(t, a, "panic")
	if !errors.Is(err, errs.Panic) {
		t.Fatalf("panicking handler: %v; want ErrPanic", err)
	}
	if err := ask(t, a, "ok"); err != nil {
		t.Fatalf("after a panic the actor no longer serves: %v", err)
	}
	if served.Load() != 2 || panics.Load() != 1 {
		t.Fatalf("served %d, panics %d", served.Load(), panics.Load())
	}
}

func TestStopFailsQueuedAndIsIdempotent(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	a := Start(Config[msg]{Mailbox: 8, Handle: func(m msg) {
		if m.op == "block" {
			close(started)
			<-release
		}
		m.reply <- nil
	}})
	blockReply := make(chan error, 1)
	if err := a.Send(t.Context(), msg{op: "block", reply: blockReply}); err != nil {
		t.Fatal(err)
	}
	<-started
	queued := make(chan error, 1)
	if err := a.Send(t.Context(), msg{op: "x", reply: queued}); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { a.Stop(); close(stopped) }()
	close(release)
	<-stopped
	// A message queued when Stop came is either handled or failed: its
	// sender is answered either way and never waits in vain.
	if err := <-queued; err != nil && !errors.Is(err, errs.Closed) {
		t.Fatalf("queued message after Stop: %v; want nil or ErrClosed", err)
	}
	if err := <-blockReply; err != nil {
		t.Fatalf("message being handled when Stop came: %v", err)
	}
	a.Stop() // second Stop returns at once
	if err := a.Send(t.Context(), msg{op: "x", reply: make(chan error, 1)}); !errors.Is(err, errs.Closed) {
		t.Fatalf("Send after Stop: %v", err)
	}
}

func TestSendOverloaded(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	a := Start(Config[msg]{Mailbox: 1, MaxWait: 20 * time.Millisecond, Handle: func(m msg) {
		started <- struct{}{}
		<-release
		m.reply <- nil
	}})
	defer a.Stop()
	defer close(release)
	if err := a.Send(t.Context(), msg{reply: make(chan error, 1)}); err != nil {
		t.Fatal(err)
	}
	<-started // the handler holds the first message
	if err := a.Send(t.Context(), msg{reply: make(chan error, 1)}); err != nil {
		t.Fatal(err) // fills the mailbox
	}
	if err := a.Send(t.Context(), msg{reply: make(chan error, 1)}); !errors.Is(err, errs.Overloaded) {
		t.Fatalf("Send to a full mailbox past MaxWait: %v; want ErrOverloaded", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := a.Send(ctx, msg{reply: make(chan error, 1)})
	if !errors.Is(err, errs.Overloaded) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Send with a cancelled context to a full mailbox: %v", err)
	}
	if a.Len() != 1 || a.Cap() != 1 {
		t.Fatalf("Len %d Cap %d", a.Len(), a.Cap())
	}
}

func TestTickRunsOnTheActor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ticks atomic.Int64
		var served atomic.Int64
		var slow atomic.Int64
		a := Start(Config[msg]{Handle: handler(&served), Timers: []Timer{
			{Every: time.Second, Do: func() {
				if ticks.Add(1) == 2 {
					panic("tick panic is contained")
				}
			}},
			{Every: 2 * time.Second, Do: func() { slow.Add(1) }},
		}})
		time.Sleep(5*time.Second + time.Millisecond)
		synctest.Wait()
		if n, m := ticks.Load(), slow.Load(); n != 5 || m != 2 {
			t.Fatalf("%d and %d ticks in 5s; want 5 of the 1s timer and 2 of the 2s timer", n, m)
		}
		if err := ask(t, a, "ok"); err != nil {
			t.Fatal(err)
		}
		a.Stop()
	})
}
