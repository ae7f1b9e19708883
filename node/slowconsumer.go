package node

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Pending limits of the node's own asynchronous subscriptions (discovery):
// a flood of large messages is dropped at the subscription, as a slow
// consumer, instead of growing the node's memory without bound. The doors
// are channel subscriptions, bounded by doorBuffer messages and, per
// message, by the server's max_payload.
const (
	subPendingMsgs  = 1024
	subPendingBytes = 8 << 20
)

// slowLogEvery is the least time between two slow-consumer warnings for
// the same subject: a flood would otherwise log once per dropped message.
const slowLogEvery = 5 * time.Second

// slowLog logs slow-consumer events at WARN, at most once per slowLogEvery
// per subject, counting those it held back. It is safe for concurrent use.
type slowLog struct {
	l     *slog.Logger
	mu    sync.Mutex
	last  map[string]time.Time
	held  map[string]int
	now   func() time.Time
	every time.Duration
}

func newSlowLog(l *slog.Logger) *slowLog {
	return &slowLog{l: l, last: map[string]time.Time{}, held: map[string]int{}, now: time.Now, every: slowLogEvery}
}

// event logs one slow-consumer event on subject (the subscription's
// subject, or the server's description of the connection), unless one was
// logged for it less than every ago.
func (s *slowLog) event(subject, msg string, attrs ...any) {
	s.mu.Lock()
	now := s.now()
	if t, ok := s.last[subject]; ok && now.Sub(t) < s.every {
		s.held[subject]++
		s.mu.Unlock()
		return
	}
	held := s.held[subject]
	s.last[subject] = now
	s.held[subject] = 0
	s.mu.Unlock()
	s.l.Warn(msg, append([]any{"subject", subject, "suppressed", held}, attrs...)...)
}

// natsErrorHandler is the node's connection's asynchronous error handler:
// slow-consumer events (messages dropped because a subscription's pending
// limit was reached) are logged at WARN, rate-limited, with the
// subscription's subject and its dropped count; other errors at WARN.
func (n *Node) natsErrorHandler(sl *slowLog) nats.ErrHandler {
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		subj := ""
		if sub != nil {
			subj = sub.Subject
		}
		if errors.Is(err, nats.ErrSlowConsumer) {
			var dropped int
			if sub != nil {
				dropped, _ = sub.Dropped()
			}
			sl.event(subj, "NATS slow consumer: the node dropped messages for this subscription", "dropped", dropped, "error", err)
			return
		}
		n.log.Warn("NATS error", "subject", subj, "error", err)
	}
}
