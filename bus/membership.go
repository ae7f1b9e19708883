package bus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Membership defaults.
const (
	DefaultHeartbeat = time.Second
	DefaultMisses    = 3
)

// maxPeerInterval bounds the heartbeat interval a peer may announce.
const maxPeerInterval = time.Minute

// EventKind says what happened to a member.
type EventKind uint8

// The membership events.
const (
	// Joined: a node sent its first Active heartbeat.
	Joined EventKind = iota
	// Left: a node announced it is leaving, or restarted (its heartbeat
	// says Joining again).
	Left
	// TimedOut: a node missed Misses heartbeats in a row and was dropped.
	TimedOut
	// Mismatch: a node's configuration fingerprint differs from ours (it
	// stays a member; reported once per distinct fingerprint).
	Mismatch
)

// String returns "joined", "left", "timed_out" or "mismatch".
func (k EventKind) String() string {
	switch k {
	case Joined:
		return "joined"
	case Left:
		return "left"
	case TimedOut:
		return "timed_out"
	case Mismatch:
		return "mismatch"
	}
	return "unknown"
}

// Event is a change of membership.
type Event struct {
	Kind EventKind
	Node string
	// Members is the number of members after the change, self included
	// once active.
	Members int
	// Theirs and Ours are the fingerprints, for a Mismatch.
	Theirs, Ours uint64
}

// MembershipConfig sets up a Membership. Zero fields take the defaults.
type MembershipConfig struct {
	// Interval between heartbeats (DefaultHeartbeat).
	Interval time.Duration
	// Misses is how many heartbeats in a row a peer may miss before it is
	// dropped (DefaultMisses). A peer is dropped Misses×its interval plus a
	// quarter interval of slack after its last heartbeat.
	Misses int
	// Fingerprint returns this node's configuration fingerprint; it is
	// called before each heartbeat and for each one received. Nil means 0.
	Fingerprint func() uint64
	// OnEvent is told about every change. Calls come from the membership's
	// own goroutine, one at a time, in order; it must not block for long
	// nor call Close.
	OnEvent func(Event)
	// Logger receives debug messages (default: none).
	Logger *slog.Logger
}

// MembershipStats are a Membership's counters.
type MembershipStats struct {
	Members    int    // live members, self included once active
	Joined     uint64 // nodes that joined
	Left       uint64 // nodes that left or restarted
	TimedOut   uint64 // nodes dropped for missing heartbeats
	Mismatches uint64 // heartbeats received with a fingerprint unlike ours
	Mismatched int    // members whose last fingerprint differs from ours
	SendErrors uint64 // heartbeats that could not be published
}

// Membership tracks the live nodes of a cluster from heartbeats over a
// Bus and picks each key's owner by rendezvous hashing over them.
//
// Feed it every heartbeat the Bus delivers with Observe. Start makes it
// joining: it publishes a Joining heartbeat (so active peers introduce
// themselves at once) and tracks peers, but is not a member and sends
// nothing more until Activate. All methods are safe for simultaneous use;
// View and Owner are lock-free.
type Membership struct {
	bus  Bus
	self string
	cfg  MembershipConfig
	log  *slog.Logger

	view atomic.Pointer[View]

	mu      sync.Mutex
	peers   map[string]*peer
	active  bool
	started bool
	closed  bool
	events  []Event

	kick      chan struct{}      // deliver queued events
	probe     chan struct{}      // a peer is joining: send a heartbeat now
	activate  chan chan struct{} // closed by the loop once active
	quit      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	joined, left, timedOut, mismatches, sendErrs atomic.Uint64
}

type peer struct {
	seen     time.Time
	interval time.Duration
	fp       uint64
	reported uint64 // fingerprint last reported as a mismatch
	mismatch bool
}

// NewMembership returns a Membership over b; Start starts it.
func NewMembership(b Bus, cfg MembershipConfig) (*Membership, error) {
	if cfg.Interval < 0 || cfg.Misses < 0 {
		return nil, fmt.Errorf("bus: membership: negative interval %v or misses %d", cfg.Interval, cfg.Misses)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultHeartbeat
	}
	if cfg.Misses == 0 {
		cfg.Misses = DefaultMisses
	}
	if cfg.Fingerprint == nil {
		cfg.Fingerprint = func() uint64 { return 0 }
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	m := &Membership{
		bus: b, self: b.Node(), cfg: cfg, log: lg,
		peers:    make(map[string]*peer),
		kick:     make(chan struct{}, 1),
		probe:    make(chan struct{}, 1),
		activate: make(chan chan struct{}),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	m.view.Store(NewView())
	return m, nil
}

// Start publishes a Joining heartbeat and starts the goroutine that sends
// heartbeats (once active) and times peers out. Close stops it. Start
// after Start or Close returns ErrClosed.
func (m *Membership) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed {
		return ErrClosed
	}
	m.started = true
	go m.run()
	return nil
}

// Self returns this node's id.
func (m *Membership) Self() string { return m.self }

// Interval returns the heartbeat interval.
func (m *Membership) Interval() time.Duration { return m.cfg.Interval }

// View returns the current members: the live peers, plus this node once
// active.
func (m *Membership) View() *View { return m.view.Load() }

// Owner returns the member owning key under the current view.
func (m *Membership) Owner(key string) string { return m.view.Load().Owner(key) }

// Peers returns the live peers (members other than this node), sorted.
func (m *Membership) Peers() []string {
	v := m.view.Load()
	if v.Contains(m.self) {
		return v.Without(m.self).Nodes()
	}
	return v.Nodes()
}

// LastSeen returns when the last heartbeat of node arrived; ok is false if
// node is not a live peer.
func (m *Membership) LastSeen(node string) (t time.Time, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, ok := m.peers[node]; ok {
		return p.seen, true
	}
	return time.Time{}, false
}

// Stats returns the membership's counters.
func (m *Membership) Stats() MembershipStats {
	m.mu.Lock()
	mis := 0
	for _, p := range m.peers {
		if p.mismatch {
			mis++
		}
	}
	m.mu.Unlock()
	return MembershipStats{
		Members:    m.view.Load().Len(),
		Joined:     m.joined.Load(),
		Left:       m.left.Load(),
		TimedOut:   m.timedOut.Load(),
		Mismatches: m.mismatches.Load(),
		Mismatched: mis,
		SendErrors: m.sendErrs.Load(),
	}
}

// Activate makes this node a member: it joins its own view and publishes
// an Active heartbeat at once, then every Interval. It returns once the
// first heartbeat is sent, or with ctx's error, or ErrClosed.
func (m *Membership) Activate(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case m.activate <- ack:
	case <-m.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Observe takes a heartbeat delivered by the bus.
func (m *Membership) Observe(hb Heartbeat) {
	if hb.Node == m.self {
		m.log.Warn("flux cluster: heartbeat carries this node's own id: two nodes share an id", "node", hb.Node)
		return
	}
	now := time.Now()
	ours := m.cfg.Fingerprint()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	p, known := m.peers[hb.Node]
	switch hb.State {
	case Joining, Leaving:
		if hb.State == Joining && m.active {
			select { // introduce ourselves to the newcomer now
			case m.probe <- struct{}{}:
			default:
			}
		}
		if known {
			delete(m.peers, hb.Node)
			m.left.Add(1)
			m.changed(Event{Kind: Left, Node: hb.Node})
		}
		return
	}
	if !known {
		p = &peer{}
		m.peers[hb.Node] = p
		m.joined.Add(1)
		m.changed(Event{Kind: Joined, Node: hb.Node})
	}
	p.seen = now
	p.interval = m.cfg.Interval
	if hb.Interval > 0 {
		p.interval = min(hb.Interval, maxPeerInterval)
	}
	p.fp = hb.Fingerprint
	p.mismatch = hb.Fingerprint != ours
	if p.mismatch {
		m.mismatches.Add(1)
		if p.reported != hb.Fingerprint {
			p.reported = hb.Fingerprint
			m.events = append(m.events, Event{Kind: Mismatch, Node: hb.Node, Members: m.view.Load().Len(), Theirs: hb.Fingerprint, Ours: ours})
			m.poke()
		}
	} else {
		p.reported = 0
	}
}

// changed rebuilds the view and queues ev. Called with mu held.
func (m *Membership) changed(ev Event) {
	nodes := make([]string, 0, len(m.peers)+1)
	for id := range m.peers {
		nodes = append(nodes, id)
	}
	if m.active {
		nodes = append(nodes, m.self)
	}
	v := NewView(nodes...)
	m.view.Store(v)
	ev.Members = v.Len()
	m.events = append(m.events, ev)
	m.poke()
}

func (m *Membership) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// deadline is when p is dropped if no heartbeat arrives.
func (m *Membership) deadline(p *peer) time.Time {
	return p.seen.Add(time.Duration(m.cfg.Misses)*p.interval + p.interval/4)
}

// expire drops the peers past their deadline and returns the earliest
// deadline left (zero if none).
func (m *Membership) expire(now time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next time.Time
	for id, p := range m.peers {
		d := m.deadline(p)
		if !now.Before(d) {
			delete(m.peers, id)
			m.timedOut.Add(1)
			m.log.Debug("flux cluster: peer timed out", "node", id, "last_seen", p.seen)
			m.changed(Event{Kind: TimedOut, Node: id})
			continue
		}
		if next.IsZero() || d.Before(next) {
			next = d
		}
	}
	return next
}

func (m *Membership) send(st NodeState) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Interval)
	defer cancel()
	err := m.bus.Heartbeat(ctx, Heartbeat{Node: m.self, State: st, Fingerprint: m.cfg.Fingerprint(), Interval: m.cfg.Interval})
	if err != nil {
		m.sendErrs.Add(1)
		m.log.Debug("flux cluster: heartbeat not sent", "state", st, "err", err)
	}
}

func (m *Membership) deliver() {
	m.mu.Lock()
	evs := m.events
	m.events = nil
	m.mu.Unlock()
	if m.cfg.OnEvent == nil {
		return
	}
	for _, ev := range evs {
		m.cfg.OnEvent(ev)
	}
}

func (m *Membership) run() {
	defer close(m.done)
	m.send(Joining)
	timer := time.NewTimer(m.cfg.Interval)
	defer timer.Stop()
	var nextBeat time.Time // zero while joining
	for {
		select {
		case <-m.quit:
			m.mu.Lock()
			active := m.active
			m.mu.Unlock()
			if active {
				m.send(Leaving)
			}
			m.deliver()
			return
		case ack := <-m.activate:
			m.mu.Lock()
			if !m.active {
				m.active = true
				m.changed(Event{Kind: Joined, Node: m.self})
			}
			m.mu.Unlock()
			m.send(Active)
			nextBeat = time.Now().Add(m.cfg.Interval)
			close(ack)
		case <-m.probe:
			if !nextBeat.IsZero() {
				m.send(Active)
			}
		case <-m.kick:
		case <-timer.C:
		}
		now := time.Now()
		if !nextBeat.IsZero() && !now.Before(nextBeat) {
			m.send(Active)
			nextBeat = now.Add(m.cfg.Interval)
		}
		wake := m.expire(now)
		m.deliver()
		if wake.IsZero() || (!nextBeat.IsZero() && nextBeat.Before(wake)) {
			wake = nextBeat
		}
		d := m.cfg.Interval
		if !wake.IsZero() {
			d = max(wake.Sub(now), 0)
		}
		timer.Reset(d)
	}
}

// Close announces that this node leaves (if it was active), stops the
// goroutine and waits for it. It is idempotent.
func (m *Membership) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		started := m.started
		m.started = true // a later Start fails
		m.mu.Unlock()
		close(m.quit)
		if started {
			<-m.done
		} else {
			close(m.done)
		}
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
	})
	return nil
}
