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
	// Tick, if positive, calls OnTick on the actor's goroutine every Tick.
	Tick   time.Duration
	OnTick func()
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

// Actor is a goroutine with a mailbox. Send, Stop, Done and Len are safe for
// simultaneous use; Handle, OnTick and OnStop run one at a time on the
// actor's own goroutine, so the state they touch needs no locks.
type Actor[M Message] struct {
	cfg     Config[M]
	mailbox chan M
	quit    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// Start starts an actor and returns it. The caller owns it and must call Stop.
func Start[M Message](cfg Config[M]) *Actor[M] {
	if cfg.Mailbox < 1 {
		cfg.Mailbox = 1
	}
	a := &Actor[M]{
		cfg:     cfg,
		mailbox: make(chan M, cfg.Mailbox),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go a.run()
	return a
}

func (a *Actor[M]) run() {
	defer close(a.done)
	var tick <-chan time.Time
	if a.cfg.Tick > 0 && a.cfg.OnTick != nil {
		t := time.NewTicker(a.cfg.Tick)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case m := <-a.mailbox:
			a.handle(m)
		case <-tick:
			a.tick()
		case <-a.quit:
			// Answer whatever is still queued so no sender waits in vain.
			for {
				select {
				case m := <-a.mailbox:
					m.Fail(errs.Closed)
				default:
					if a.cfg.OnStop != nil {
						a.cfg.OnStop()
					}
					return
				}
			}
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

func (a *Actor[M]) tick() {
	defer func() {
		if v := recover(); v != nil && a.cfg.OnPanic != nil {
			a.cfg.OnPanic(v)
		}
	}()
	a.cfg.OnTick()
}

// Send puts m in the mailbox. It returns an error wrapping flux.ErrClosed if
// the actor is stopping, and one wrapping flux.ErrOverloaded if the mailbox
// stays full until ctx is done (the error then also wraps ctx.Err()) or for
// longer than Config.MaxWait.
func (a *Actor[M]) Send(ctx context.Context, m M) error {
	select {
	case <-a.quit:
		return errs.Closed
	default:
	}
	select {
	case a.mailbox <- m:
		return nil
	default:
	}
	return a.sendSlow(ctx, m)
}

func (a *Actor[M]) sendSlow(ctx context.Context, m M) error {
	var timeout <-chan time.Time
	if a.cfg.MaxWait > 0 {
		t := time.NewTimer(a.cfg.MaxWait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case a.mailbox <- m:
		return nil
	case <-a.quit:
		return errs.Closed
	case <-ctx.Done():
		return fmt.Errorf("%w: mailbox full: %w", errs.Overloaded, ctx.Err())
	case <-timeout:
		return fmt.Errorf("%w: mailbox full for %v", errs.Overloaded, a.cfg.MaxWait)
	}
}

// Stop asks the actor to finish and waits until its goroutine has exited.
// Messages still queued are failed with flux.ErrClosed. Stop is idempotent.
func (a *Actor[M]) Stop() {
	a.once.Do(func() { close(a.quit) })
	<-a.done
}

// Done is closed once the actor's goroutine has exited. Senders waiting for
// a reply select on it so that they never wait for a stopped actor.
func (a *Actor[M]) Done() <-chan struct{} { return a.done }

// Len reports how many messages wait in the mailbox.
func (a *Actor[M]) Len() int { return len(a.mailbox) }

// Cap reports the mailbox capacity.
func (a *Actor[M]) Cap() int { return cap(a.mailbox) }
