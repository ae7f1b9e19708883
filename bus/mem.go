package bus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	flux "github.com/fluxlimiter/flux"
)

// DefaultMemInbox is the number of published messages a Mem node queues
// before it drops more (as a NATS slow consumer would).
const DefaultMemInbox = 4096

// Network is an in-memory network of Mem buses, for deterministic tests of
// cluster logic, as hashicorp/raft ships an in-memory transport. It can
// delay messages, cut links and pause nodes. Messages go through the same
// binary codec as on NATS.
//
// Each Mem delivers published messages (gossip and heartbeats) in order on
// one goroutine and requests (forwarded checks and syncs) in order on
// another; both block only on channels and timers, so a cluster of Mem
// buses runs inside a testing/synctest bubble.
//
// A Network is safe for simultaneous use.
type Network struct {
	mu      sync.Mutex
	nodes   map[string]*Mem
	cut     map[[2]string]bool
	paused  map[string]bool
	latency time.Duration
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{nodes: make(map[string]*Mem), cut: make(map[[2]string]bool), paused: make(map[string]bool)}
}

// SetLatency delays every message delivered from now on by d (a request's
// reply too).
func (n *Network) SetLatency(d time.Duration) {
	n.mu.Lock()
	n.latency = d
	n.mu.Unlock()
}

func link(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Cut drops every message between a and b from now on; requests between
// them fail with ErrNoResponders, as when a NATS route is down.
func (n *Network) Cut(a, b string) {
	n.mu.Lock()
	n.cut[link(a, b)] = true
	n.mu.Unlock()
}

// Mend undoes Cut.
func (n *Network) Mend(a, b string) {
	n.mu.Lock()
	delete(n.cut, link(a, b))
	n.mu.Unlock()
}

// Pause makes node unresponsive, as a stalled process is: nothing it
// publishes is delivered, nothing is delivered to it, and requests to it
// hang until their context ends.
func (n *Network) Pause(node string) {
	n.mu.Lock()
	n.paused[node] = true
	n.mu.Unlock()
}

// Resume undoes Pause. Messages dropped meanwhile stay lost.
func (n *Network) Resume(node string) {
	n.mu.Lock()
	delete(n.paused, node)
	n.mu.Unlock()
}

// Join adds a node to the network and returns its bus. Its messages are
// not signed (Security.Insecure): a network's nodes trust each other. Use
// JoinSecure to test authentication.
func (n *Network) Join(node string) (*Mem, error) {
	return n.JoinSecure(node, Security{Insecure: true})
}

// memCluster is the cluster name Mem buses derive their keys with.
const memCluster = "mem"

// JoinSecure is Join for a node that signs its messages and verifies its
// peers' as a NATS bus does (NATSConfig.Security).
func (n *Network) JoinSecure(node string, sec Security) (*Mem, error) {
	if err := ValidNodeID(node); err != nil {
		return nil, err
	}
	if err := sec.validate(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.nodes[node]; ok {
		return nil, fmt.Errorf("%w: %q already joined the network", ErrInvalidNode, node)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mem{
		ctx: ctx, cancel: cancel,
		net:  n,
		id:   node,
		pub:  make(chan memMsg, DefaultMemInbox),
		req:  make(chan memReq),
		quit: make(chan struct{}),
		g:    newGuard(node, memCluster, sec),
	}
	n.nodes[node] = m
	return m, nil
}

// Mem is one node's Bus on a Network.
type Mem struct {
	net  *Network
	id   string
	pub  chan memMsg
	req  chan memReq
	quit chan struct{}
	wg   sync.WaitGroup
	// ctx is the context of handlers; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	h         Handler
	closed    bool
	closeOnce sync.Once

	g       *guard
	dropped atomic.Uint64
}

type memMsg struct {
	from string
	at   time.Time
	data []byte
}

type memReq struct {
	memMsg
	reply chan [][]byte // buffered 1
}

var _ Bus = (*Mem)(nil)

// Node returns the node's id.
func (m *Mem) Node() string { return m.id }

// Stats returns the node's counters.
func (m *Mem) Stats() Stats {
	st := m.g.stats()
	st.Dropped = m.dropped.Load()
	return st
}

// Inject delivers data to node as if from published it on the gossip or
// heartbeat subject (the transport's claim of the sender, which only an
// insecure bus trusts). Tests use it to forge messages.
func (n *Network) Inject(from, node string, data []byte) {
	n.mu.Lock()
	d := n.nodes[node]
	n.mu.Unlock()
	if d == nil || !d.listening() {
		return
	}
	select {
	case d.pub <- memMsg{from: from, at: time.Now(), data: data}:
	default:
		d.dropped.Add(1)
	}
}

// Listen starts delivering to h.
func (m *Mem) Listen(h Handler) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return ErrClosed
	case m.h != nil:
		return ErrAlreadyListening
	}
	m.h = h
	m.wg.Go(m.deliverPub)
	m.wg.Go(m.serveReq)
	return nil
}

func (m *Mem) listening() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.h != nil && !m.closed
}

// route reports how a message from m reaches node: the destination, or
// nil if it is unreachable; paused tells that it is reachable but hangs.
func (m *Mem) route(node string) (dst *Mem, paused bool, latency time.Duration) {
	n := m.net
	n.mu.Lock()
	defer n.mu.Unlock()
	dst = n.nodes[node]
	if dst == nil || n.cut[link(m.id, node)] {
		return nil, false, 0
	}
	return dst, n.paused[node] || n.paused[m.id], n.latency
}

func (m *Mem) broadcast(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return ErrClosed
	}
	n := m.net
	n.mu.Lock()
	var dsts []*Mem
	if !n.paused[m.id] {
		for id, d := range n.nodes {
			if id != m.id && !n.cut[link(m.id, id)] && !n.paused[id] {
				dsts = append(dsts, d)
			}
		}
	}
	at := time.Now().Add(n.latency)
	n.mu.Unlock()
	for _, d := range dsts {
		if !d.listening() {
			continue
		}
		select {
		case d.pub <- memMsg{from: m.id, at: at, data: data}:
		default:
			d.dropped.Add(1)
		}
	}
	return nil
}

// Publish sends u to every other node.
func (m *Mem) Publish(ctx context.Context, u Updates) error {
	for items := u.Items; ; {
		n := min(len(items), m.g.maxItems)
		part := Updates{Limiter: u.Limiter, Items: items[:n]}
		data, _ := m.g.wrap(nil, kindUpdates, "", 0, func(dst []byte) []byte { return appendUpdates(dst, &part) })
		if err := m.broadcast(ctx, data); err != nil {
			return err
		}
		if items = items[n:]; len(items) == 0 {
			return nil
		}
	}
}

// Heartbeat sends hb to every other node.
func (m *Mem) Heartbeat(ctx context.Context, hb Heartbeat) error {
	data, _ := m.g.wrap(nil, kindHeartbeat, "", 0, func(dst []byte) []byte { return appendHeartbeat(dst, &hb) })
	return m.broadcast(ctx, data)
}

func (m *Mem) request(ctx context.Context, node string, data []byte) ([][]byte, error) {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	dst, paused, latency := m.route(node)
	if dst == nil || !dst.listening() {
		return nil, fmt.Errorf("%w: node %s", ErrNoResponders, node)
	}
	if paused {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	r := memReq{memMsg: memMsg{from: m.id, at: time.Now().Add(latency), data: data}, reply: make(chan [][]byte, 1)}
	select {
	case dst.req <- r:
	case <-dst.quit:
		return nil, fmt.Errorf("%w: node %s", ErrNoResponders, node)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case b := <-r.reply:
		if latency > 0 {
			t := time.NewTimer(latency)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return b, nil
	case <-dst.quit:
		return nil, fmt.Errorf("%w: node %s", ErrNoResponders, node)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Forward asks node to decide checks.
func (m *Mem) Forward(ctx context.Context, node string, checks []Check) ([]Result, error) {
	data, seq := m.g.wrap(nil, kindForward, node, 0, func(dst []byte) []byte { return appendForward(dst, checks) })
	bs, err := m.request(ctx, node, data)
	if err != nil {
		return nil, err
	}
	msg, err := m.g.openReply(bs[0], kindForwardReply, node, seq)
	if err != nil {
		return nil, err
	}
	return decodeForwardReply(msg)
}

// Sync asks node for the state of limiter.
func (m *Mem) Sync(ctx context.Context, node, limiter string) ([]flux.KeyState, error) {
	data, seq := m.g.wrap(nil, kindSync, node, 0, func(dst []byte) []byte { return appendSync(dst, limiter) })
	bs, err := m.request(ctx, node, data)
	if err != nil {
		return nil, err
	}
	msg, err := m.g.openReply(bs[0], kindSyncReply, node, seq)
	if err != nil {
		return nil, err
	}
	states, _, remote, err := decodeSyncReply(msg)
	if err != nil {
		return nil, err
	}
	return states, remote
}

// wait sleeps until at, or returns false if the bus closes first.
func (m *Mem) wait(at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-m.quit:
		return false
	}
}

func (m *Mem) deliverPub() {
	for {
		var msg memMsg
		select {
		case msg = <-m.pub:
		case <-m.quit:
			return
		}
		if !m.wait(msg.at) {
			return
		}
		m.g.dispatchPub(m.h, msg.from, msg.data)
	}
}

func (m *Mem) serveReq() {
	for {
		var r memReq
		select {
		case r = <-m.req:
		case <-m.quit:
			return
		}
		if !m.wait(r.at) {
			return
		}
		if bs := m.g.serveRequest(m.ctx, m.h, r.from, r.data, 0); bs != nil {
			r.reply <- bs
		}
	}
}

// Close leaves the network and waits for the delivery goroutines.
func (m *Mem) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		m.net.mu.Lock()
		if m.net.nodes[m.id] == m {
			delete(m.net.nodes, m.id)
		}
		m.net.mu.Unlock()
		close(m.quit)
		m.cancel()
		m.wg.Wait()
	})
	return nil
}
