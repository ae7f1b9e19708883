// Package actor is the small runtime Flux's shards run on: one goroutine that
// owns its state and takes messages from a bounded mailbox, a context-aware
// Send, a stop that waits for the goroutine to exit, an optional timer, and
// containment of a panicking handler.
//
// The runtime knows nothing about replies: a message type implements Fail so
// that the runtime can answer its sender with an error when the message
// cannot be handled (the handler panicked, or the actor stopped with the
// message still queued). Fail must never block; a reply channel buffered 1
// and a non-blocking send meet that.
//
// Every message that Send accepts is answered, by the handler or by Fail,
// even when the actor stops at the same moment. Callers can therefore wait
// for a reply on its channel alone (plus their context), which is cheaper
// than also watching the actor's lifetime.
package actor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/fluxlimiter/flux/internal/errs"
)

// Message is the constraint on an actor's message type.
type Message interface {
	// Fail answers the message's sender with err without blocking.
	Fail(err error)
}

// Config sets up an actor. Only Handle is required.
type Config[M Message] struct {
	// Mailbox is the mailbox capacity; values below 1 mean 1.
	Mailbox int
	// Handle processes one message. It runs on the actor's goroutine only.
	Handle func(M)
	// Timers run periodic work on the actor's goroutine: each Timer's Do
	// is called every Every. Ticks queue behind the messages already in
	// the mailbox, so a busy actor delays them but never loses them.
	Timers []Timer
	// OnStop runs on the actor's goroutine after the last message, before
	// Stop returns.
	OnStop func()
	// OnPanic, if set, is told about every recovered panic (for logging).
	OnPanic func(v any)
	// MaxWait bounds how long Send waits for room in a full mailbox before
	// it gives up with an error wrapping flux.ErrOverloaded. Zero means
	// Send waits as long as its context allows.
	MaxWait time.Duration
}

// envelope kinds: the mailbox carries the timer's ticks and the stop request
// too, so the actor waits on one channel with a plain receive (much cheaper
// to park on than a select over three channels).
const (
	kindMsg uint8 = iota
	kindTick
	kindStop
)

type envelope[M any] struct {
	kind  uint8
	timer uint8 // index into Config.Timers, for kindTick
	m     M
}

// Timer is periodic work run on the actor's goroutine.
type Timer struct {
	Every time.Duration
	Do    func()
}

// Actor is a goroutine with a mailbox. Send, Stop, Done, Len and Cap are
// safe for simultaneous use; Handle, the Timers and OnStop run one at a time on
// the actor's own goroutine, so the state they touch needs no locks.
type Actor[M Message] struct {
	cfg     Config[M]
	mailbox chan envelope[M]
	quit    chan struct{} // closed by Stop: Send refuses, the ticker exits
	done    chan struct{} // closed when the actor's goroutine is about to exit
	once    sync.Once
	wg      sync.WaitGroup // the actor and its tickers
}

// Start starts an actor and returns it. The caller owns it and must call Stop.
func Start[M Message](cfg Config[M]) *Actor[M] {
	if cfg.Mailbox < 1 {
		cfg.Mailbox = 1
	}
	a := &Actor[M]{
		cfg:     cfg,
		mailbox: make(chan envelope[M], cfg.Mailbox),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	a.wg.Go(a.run)
	for i, t := range cfg.Timers {
		if t.Every > 0 && t.Do != nil && i < 256 {
			a.wg.Go(func() { a.ticker(uint8(i), t.Every) })
		}
	}
	return a
}

// ticker turns timer ticks into mailbox envelopes. A tick waits for room in
// the mailbox, so the sweep is delayed, never dropped, by a busy actor.
func (a *Actor[M]) ticker(i uint8, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			select {
			case a.mailbox <- envelope[M]{kind: kindTick, timer: i}:
			case <-a.quit:
				return
			}
		case <-a.quit:
			return
		}
	}
}

func (a *Actor[M]) run() {
	for env := range a.mailbox {
		switch env.kind {
		case kindMsg:
			a.handle(env.m)
		case kindTick:
			a.tick(a.cfg.Timers[env.timer].Do)
		case kindStop:
			a.drain()
			if a.cfg.OnStop != nil {
				a.cfg.OnStop()
			}
			close(a.done)
			// A sender that enqueued after the first drain but before done
			// was closed has not seen done closed: answer it here. One that
			// enqueues after this drain sees done closed and drains itself.
			a.drain()
			return
		}
	}
}

// drain fails every queued message with ErrClosed.
func (a *Actor[M]) drain() {
	for {
		select {
		case env := <-a.mailbox:
			if env.kind == kindMsg {
				env.m.Fail(errs.Closed)
			}
		default:
			return
		}
	}
}

func (a *Actor[M]) handle(m M) {
	defer func() {
		if v := recover(); v != nil {
			m.Fail(fmt.Errorf("%w: %v", errs.Panic, v))
			if a.cfg.OnPanic != nil {
				a.cfg.OnPanic(v)
			}
		}
	}()
	a.cfg.Handle(m)
}

func (a *Actor[M]) tick(do func()) {
	defer func() {
		if v := recover(); v != nil && a.cfg.OnPanic != nil {
			a.cfg.OnPanic(v)
		}
	}()
	do()
}

// Send puts m in the mailbox; the actor will answer it (through the handler
// or, if it stops first, through m.Fail with an error wrapping
// flux.ErrClosed). Send returns an error, and m is not queued, if the actor
// has stopped (flux.ErrClosed) or if the mailbox stays full until ctx is
// done (flux.ErrOverloaded, also wrapping ctx.Err()) or for longer than
// Config.MaxWait (flux.ErrOverloaded).
func (a *Actor[M]) Send(ctx context.Context, m M) error {
	select {
	case <-a.quit:
		return errs.Closed
	default:
	}
	select {
	case a.mailbox <- envelope[M]{m: m}:
	default:
		if err := a.sendSlow(ctx, m); err != nil {
			return err
		}
	}
	// If the actor has exited, nobody else will take what is queued.
	select {
	case <-a.done:
		a.drain()
	default:
	}
	return nil
}

func (a *Actor[M]) sendSlow(ctx context.Context, m M) error {
	var timeout <-chan time.Time
	if a.cfg.MaxWait > 0 {
		t := time.NewTimer(a.cfg.MaxWait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case a.mailbox <- envelope[M]{m: m}:
		return nil
	case <-a.quit:
		return errs.Closed
	case <-ctx.Done():
		return fmt.Errorf("%w: mailbox full: %w", errs.Overloaded, ctx.Err())
	case <-timeout:
		return fmt.Errorf("%w: mailbox full for %v", errs.Overloaded, a.cfg.MaxWait)
	}
}

// Post is Send for the actor's own helpers (a loader reporting back): it
// waits for room as long as ctx allows, ignoring Config.MaxWait, so a
// result is never dropped because the mailbox was busy. It fails with
// flux.ErrClosed once the actor is stopping.
func (a *Actor[M]) Post(ctx context.Context, m M) error {
	select {
	case <-a.quit:
		return errs.Closed
	default:
	}
	select {
	case a.mailbox <- envelope[M]{m: m}:
	case <-a.quit:
		return errs.Closed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-a.done:
		a.drain()
	default:
	}
	return nil
}

// Stop asks the actor to finish and waits until its goroutines have exited.
// Messages queued before Stop are handled; those that arrive while it stops
// are failed with flux.ErrClosed; either way their senders are answered.
// Stop is idempotent.
func (a *Actor[M]) Stop() {
	a.once.Do(func() {
		close(a.quit)
		a.mailbox <- envelope[M]{kind: kindStop} // behind what is queued
	})
	a.wg.Wait()
}

// Done is closed once the actor has stopped taking messages.
func (a *Actor[M]) Done() <-chan struct{} { return a.done }

// Len reports how many messages wait in the mailbox.
func (a *Actor[M]) Len() int { return len(a.mailbox) }

// Cap reports the mailbox capacity.
func (a *Actor[M]) Cap() int { return cap(a.mailbox) }
