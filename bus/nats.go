package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	flux "github.com/fluxlimiter/flux"
)

// HeaderNode is the NATS header naming the node that sent a message. A
// node drops gossip and heartbeats carrying its own id without decoding
// them.
const HeaderNode = "Flux-Node"

// DefaultCluster is the subject namespace when NATSConfig.Cluster is empty.
const DefaultCluster = "default"

// NATSConfig sets up a NATS bus.
type NATSConfig struct {
	// Conn is the connection to use. The bus does not own it: close it
	// after the bus.
	Conn *nats.Conn
	// Node is this node's id (see ValidNodeID).
	Node string
	// Cluster namespaces the subjects, so that several Flux clusters can
	// share one NATS deployment (DefaultCluster if empty; same charset as
	// node ids).
	Cluster string
	// ForwardHandlers is how many forwarded requests this node decides at
	// once (DefaultForwardHandlers): one NATS subscription delivers its
	// messages one at a time, so the forward subject is subscribed this
	// many times in one queue group.
	ForwardHandlers int
	// Logger receives debug messages (default: none).
	Logger *slog.Logger
	// Security authenticates the messages and bounds what one peer may
	// send. Its Secret is required unless Insecure is set.
	Security
}

// DefaultForwardHandlers is NATSConfig.ForwardHandlers when zero.
const DefaultForwardHandlers = 4

// Subjects are the NATS subjects a cluster uses. They are internal: deny
// them to clients with NATS permissions (docs/CLUSTER.md).
type Subjects struct {
	prefix string
}

// SubjectsFor returns the subjects of cluster.
func SubjectsFor(cluster string) Subjects { return Subjects{prefix: "_FLUX.v1." + cluster} }

// All matches every subject of the cluster: _FLUX.v1.<cluster>.>, for
// NATS permissions.
func (s Subjects) All() string { return s.prefix + ".>" }

// Gossip is where nodes publish their admissions: _FLUX.v1.<cluster>.gossip.
func (s Subjects) Gossip() string { return s.prefix + ".gossip" }

// Heartbeat is where nodes publish heartbeats: _FLUX.v1.<cluster>.hb.
func (s Subjects) Heartbeat() string { return s.prefix + ".hb" }

// Forward is where node takes forwarded checks (request-reply):
// _FLUX.v1.<cluster>.node.<node>.fwd.
func (s Subjects) Forward(node string) string { return s.prefix + ".node." + node + ".fwd" }

// Sync is where node answers snapshot requests (one request, replies in
// chunks): _FLUX.v1.<cluster>.node.<node>.sync.
func (s Subjects) Sync(node string) string { return s.prefix + ".node." + node + ".sync" }

// Inbox is the prefix of node's reply subjects for snapshots:
// _FLUX.v1.<cluster>.node.<node>.inbox, under the internal subjects that
// clients may not subscribe to.
func (s Subjects) Inbox(node string) string { return s.prefix + ".node." + node + ".inbox" }

// NATS is a Bus over a NATS connection: plain publish/subscribe for gossip
// and heartbeats (the sender's id in the Flux-Node header), request-reply
// for forwarded checks (several subscriptions in a queue group, so that
// requests are decided in parallel), and a request answered by a stream of
// chunks for snapshots. Safe for simultaneous use.
type NATS struct {
	nc       *nats.Conn
	self     string
	subj     Subjects
	log      *slog.Logger
	handlers int

	ctx    context.Context // handlers' context, cancelled by Close
	cancel context.CancelFunc

	mu        sync.Mutex
	h         Handler
	subs      []*nats.Subscription
	closed    bool
	inflight  sync.WaitGroup // handler calls in progress
	closeOnce sync.Once

	g *guard
}

var _ Bus = (*NATS)(nil)

// NewNATS returns a NATS bus. Call Listen to start receiving.
func NewNATS(cfg NATSConfig) (*NATS, error) {
	if cfg.Conn == nil {
		return nil, errors.New("bus: nil NATS connection")
	}
	if err := ValidNodeID(cfg.Node); err != nil {
		return nil, err
	}
	if cfg.Cluster == "" {
		cfg.Cluster = DefaultCluster
	}
	if err := ValidNodeID(cfg.Cluster); err != nil {
		return nil, fmt.Errorf("cluster name: %w", err)
	}
	if err := cfg.Security.validate(); err != nil {
		return nil, err
	}
	if cfg.ForwardHandlers < 0 {
		return nil, fmt.Errorf("bus: %d forward handlers", cfg.ForwardHandlers)
	}
	if cfg.ForwardHandlers == 0 {
		cfg.ForwardHandlers = DefaultForwardHandlers
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &NATS{
		nc: cfg.Conn, self: cfg.Node, subj: SubjectsFor(cfg.Cluster), log: lg, handlers: cfg.ForwardHandlers,
		ctx: ctx, cancel: cancel,
		g: newGuard(cfg.Node, cfg.Cluster, cfg.Security),
	}, nil
}

// Node returns this node's id.
func (b *NATS) Node() string { return b.self }

// Subjects returns the subjects this bus uses.
func (b *NATS) Subjects() Subjects { return b.subj }

// Stats returns the bus's counters.
func (b *NATS) Stats() Stats {
	st := b.g.stats()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.subs {
		if n, err := s.Dropped(); err == nil && n > 0 {
			st.Dropped += uint64(n)
		}
	}
	return st
}

// enter admits one handler call unless the bus is closed; leave ends it.
func (b *NATS) enter() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.inflight.Add(1)
	return true
}

func (b *NATS) leave() { b.inflight.Done() }

// Listen subscribes to the cluster's subjects and starts delivering to h.
// It returns once the server has registered the subscriptions.
func (b *NATS) Listen(h Handler) error {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return ErrClosed
	case b.h != nil:
		b.mu.Unlock()
		return ErrAlreadyListening
	}
	b.h = h
	b.mu.Unlock()

	pub := func(m *nats.Msg) {
		from := m.Header.Get(HeaderNode)
		if from == b.self || !b.enter() {
			return
		}
		defer b.leave()
		b.g.dispatchPub(h, from, m.Data)
	}
	type subscription struct {
		subject, queue string
		cb             nats.MsgHandler
	}
	subs := []subscription{
		{b.subj.Heartbeat(), "", pub}, // apart from gossip: heartbeats must not queue behind it
		{b.subj.Gossip(), "", pub},
		{b.subj.Sync(b.self), "", b.serveSync},
	}
	for range b.handlers {
		subs = append(subs, subscription{b.subj.Forward(b.self), "fwd", b.serveForward})
	}
	for _, s := range subs {
		var sub *nats.Subscription
		var err error
		if s.queue == "" {
			sub, err = b.nc.Subscribe(s.subject, s.cb)
		} else {
			sub, err = b.nc.QueueSubscribe(s.subject, s.queue, s.cb)
		}
		if err != nil {
			_ = b.Close()
			return fmt.Errorf("bus: subscribe %s: %w", s.subject, err)
		}
		b.mu.Lock()
		b.subs = append(b.subs, sub)
		b.mu.Unlock()
	}
	if err := b.nc.Flush(); err != nil {
		_ = b.Close()
		return fmt.Errorf("bus: flush subscriptions: %w", err)
	}
	return nil
}

func (b *NATS) serveForward(m *nats.Msg) {
	if m.Reply == "" || !b.enter() {
		return
	}
	defer b.leave()
	for _, reply := range b.g.serveRequest(b.ctx, b.h, m.Header.Get(HeaderNode), m.Data, 0) {
		if err := m.Respond(reply); err != nil {
			b.log.Debug("flux cluster: forward reply not sent", "err", err)
		}
	}
}

func (b *NATS) serveSync(m *nats.Msg) {
	if m.Reply == "" || !b.enter() {
		return
	}
	defer b.leave()
	for _, chunk := range b.g.serveRequest(b.ctx, b.h, m.Header.Get(HeaderNode), m.Data, b.chunkLimit()) {
		if err := b.nc.Publish(m.Reply, chunk); err != nil {
			b.log.Debug("flux cluster: sync chunk not sent", "err", err)
			return
		}
	}
}

// chunkLimit is the payload budget of one message, leaving room for the
// message's own header fields.
func (b *NATS) chunkLimit() int {
	return max(int(b.nc.MaxPayload())-1024-maxEnvelopeHeader, 1024)
}

func (b *NATS) msg(subject string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(HeaderNode, b.self)
	m.Data = data
	return m
}

func (b *NATS) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Publish sends u to every other node, split into several messages if it
// does not fit in one.
func (b *NATS) Publish(ctx context.Context, u Updates) error {
	if b.isClosed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	limit := b.chunkLimit() - len(u.Limiter)
	items := u.Items
	for len(items) > 0 {
		n, size := 0, 0
		for n < len(items) && n < b.g.maxItems {
			s := updateSize(&items[n])
			if n > 0 && size+s > limit {
				break
			}
			size += s
			n++
		}
		part := Updates{Limiter: u.Limiter, Items: items[:n]}
		data, _ := b.g.wrap(nil, kindUpdates, "", 0, func(dst []byte) []byte { return appendUpdates(dst, &part) })
		if len(data) > int(b.nc.MaxPayload()) {
			return errorf(ErrTooLarge, "update of %d bytes", len(data))
		}
		if err := b.nc.PublishMsg(b.msg(b.subj.Gossip(), data)); err != nil {
			return fmt.Errorf("bus: publish: %w", err)
		}
		items = items[n:]
	}
	return nil
}

// Heartbeat sends hb to every other node.
func (b *NATS) Heartbeat(ctx context.Context, hb Heartbeat) error {
	if b.isClosed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	data, _ := b.g.wrap(nil, kindHeartbeat, "", 0, func(dst []byte) []byte { return appendHeartbeat(dst, &hb) })
	if err := b.nc.PublishMsg(b.msg(b.subj.Heartbeat(), data)); err != nil {
		return fmt.Errorf("bus: heartbeat: %w", err)
	}
	return nil
}

func natsErr(node string, err error) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: node %s", ErrNoResponders, node)
	case errors.Is(err, nats.ErrConnectionClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// Forward asks node to decide checks.
func (b *NATS) Forward(ctx context.Context, node string, checks []Check) ([]Result, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	data, seq := b.g.wrap(nil, kindForward, node, 0, func(dst []byte) []byte { return appendForward(dst, checks) })
	if len(data) > int(b.nc.MaxPayload()) {
		return nil, errorf(ErrTooLarge, "forward of %d bytes", len(data))
	}
	resp, err := b.nc.RequestMsgWithContext(ctx, b.msg(b.subj.Forward(node), data))
	if err != nil {
		return nil, natsErr(node, err)
	}
	msg, err := b.g.openReply(resp.Data, kindForwardReply, node, seq)
	if err != nil {
		return nil, err
	}
	return decodeForwardReply(msg)
}

// Sync asks node for the state of limiter and collects its chunks.
func (b *NATS) Sync(ctx context.Context, node, limiter string) ([]flux.KeyState, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	inbox := b.subj.Inbox(b.self) + "." + nats.NewInbox()[len(nats.InboxPrefix):]
	sub, err := b.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, natsErr(node, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	data, seq := b.g.wrap(nil, kindSync, node, 0, func(dst []byte) []byte { return appendSync(dst, limiter) })
	req := b.msg(b.subj.Sync(node), data)
	req.Reply = inbox
	if err := b.nc.PublishMsg(req); err != nil {
		return nil, natsErr(node, err)
	}
	var out []flux.KeyState
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, natsErr(node, err)
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return nil, fmt.Errorf("%w: node %s", ErrNoResponders, node)
		}
		msg, err := b.g.openReply(m.Data, kindSyncReply, node, seq)
		if err != nil {
			return nil, err
		}
		states, last, remote, err := decodeSyncReply(msg)
		if err != nil {
			return nil, err
		}
		if remote != nil {
			return nil, remote
		}
		out = append(out, states...)
		if last {
			return out, nil
		}
	}
}

// Close unsubscribes, returns once no handler call is running, and flushes
// the connection (up to a second) so that the last messages published
// leave. It does not close the connection. It is idempotent.
func (b *NATS) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		subs := b.subs
		b.subs = nil
		b.mu.Unlock()
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		b.cancel()
		b.inflight.Wait()
		// Send what was published last (a leaving heartbeat, the final
		// gossip) before the caller closes the connection.
		if !b.nc.IsClosed() {
			_ = b.nc.FlushTimeout(time.Second)
		}
	})
	return nil
}
