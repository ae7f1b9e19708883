package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux/bench/internal/keyseq"
)

// flux-node's wire names (docs/PROTOCOL.md).
const (
	SubjectCheck      = "flux.v1.check"
	SubjectCheckBatch = "flux.v1.check_batch"
)

// NATS drives a flux-node over NATS request-reply.
//
// Requests are pipelined rather than sent with nc.Request: each connection
// has one wildcard reply subscription and a window of slots; a sender
// goroutine publishes each request with the reply subject <inbox>.<slot>
// and the subscription's handler reads the slot from the reply subject,
// records the latency and frees the slot for the next request. This keeps
// InFlight requests outstanding with two goroutines per connection, no
// channel or timer per request and no shared response map, so the
// generator costs as little CPU as possible on a machine it shares with
// the node.
type NATS struct {
	// URL is the NATS server the node serves on.
	URL string
	// Limiter is the limiter name every check names.
	Limiter string
	// Options are extra connection options (credentials, TLS).
	Options []nats.Option
	// Subject overrides the subject requests are sent to (default:
	// SubjectCheck for one key per request, SubjectCheckBatch otherwise).
	Subject string
	// UseRequest sends with nc.Request from InFlight goroutines (one
	// request outstanding per goroutine, nats.go's shared reply
	// subscription) instead of the pipelined sender, for comparison. It
	// supports closed-loop runs only.
	UseRequest bool
}

// Run sends cfg's load and returns what it measured. It returns early,
// with what was measured so far, when ctx ends.
func (t NATS) Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	if t.Limiter == "" {
		return nil, errors.New("load: NATS.Limiter is empty")
	}
	items := t.items(keyseq.Names(cfg.KeyPrefix, cfg.Keys))
	if t.UseRequest {
		if cfg.Rate > 0 {
			return nil, errors.New("load: open-loop runs need the pipelined sender")
		}
		return t.runRequests(ctx, cfg, items)
	}
	conns := make([]*natsConn, cfg.Conns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.nc.Close()
			}
		}
	}()
	for i := range conns {
		window := cfg.InFlight / cfg.Conns
		if i < cfg.InFlight%cfg.Conns {
			window++
		}
		c, err := t.dial(cfg, window, items)
		if err != nil {
			return nil, err
		}
		conns[i] = c
	}

	base := time.Now()
	end := base.Add(cfg.Duration)
	// A sender waiting for a free slot gives up once no reply has come for
	// the request timeout past the end, so a node that stops answering
	// cannot hang the run.
	sctx, cancel := context.WithDeadline(ctx, end.Add(cfg.Timeout))
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range conns {
		c.base = base
		wg.Go(func() { c.send(sctx, cfg, end) })
	}
	wg.Wait()

	// Drain: wait for outstanding replies, up to the request timeout.
	deadline := time.Now().Add(cfg.Timeout)
	for _, c := range conns {
		for c.outstanding.Load() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
	}

	res := &Result{Name: cfg.Name, Batch: cfg.Batch, Rate: cfg.Rate}
	var last int64
	for _, c := range conns {
		_ = c.sub.Unsubscribe()
		c.mu.Lock()
		res.merge(&c.res)
		c.mu.Unlock()
		res.Lag.Merge(&c.lag)
		if n := c.outstanding.Load(); n > 0 {
			res.Errors += uint64(n)
			if res.FirstError == "" {
				res.FirstError = fmt.Sprintf("%d requests unanswered after %v", n, cfg.Timeout)
			}
		}
		last = max(last, c.last.Load())
	}
	res.Elapsed = time.Duration(last)
	if c := ctx.Err(); c != nil {
		return res, c
	}
	return res, nil
}

type natsConn struct {
	nc      *nats.Conn
	sub     *nats.Subscription
	subject string
	batch   int
	items   [][]byte // the request item of each key
	prefix  string
	replies []string       // reply subject of each slot
	start   []atomic.Int64 // send time of each slot's request, ns since base
	free    chan int       // slots free for a new request

	base        time.Time
	outstanding atomic.Int64
	last        atomic.Int64 // time of the latest reply, ns since base

	mu  sync.Mutex // guards res (written by the reply handler)
	res Result
	lag Hist // written by the sender only
}

// items returns each key's request item, {"limiter":..,"key":..,"cost":1},
// built once so that a request is a few appends.
func (t NATS) items(keys []string) [][]byte {
	items := make([][]byte, len(keys))
	for i, k := range keys {
		b := make([]byte, 0, 40+len(t.Limiter)+len(k))
		b = append(b, `{"limiter":"`...)
		b = append(b, t.Limiter...)
		b = append(b, `","key":"`...)
		b = append(b, k...)
		items[i] = append(b, `","cost":1}`...)
	}
	return items
}

func (t NATS) dial(cfg Config, window int, items [][]byte) (*natsConn, error) {
	opts := append([]nats.Option{nats.Name("fluxload"), nats.NoReconnect()}, t.Options...)
	nc, err := nats.Connect(t.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("load: connect %s: %w", t.URL, err)
	}
	c := &natsConn{
		nc:      nc,
		subject: SubjectCheck,
		batch:   cfg.Batch,
		items:   items,
		prefix:  nc.NewRespInbox() + ".",
		replies: make([]string, window),
		start:   make([]atomic.Int64, window),
		free:    make(chan int, window),
	}
	if cfg.Batch > 1 {
		c.subject = SubjectCheckBatch
	}
	if t.Subject != "" {
		c.subject = t.Subject
	}
	for i := range window {
		c.replies[i] = c.prefix + strconv.Itoa(i)
		c.free <- i
	}
	c.sub, err = nc.Subscribe(c.prefix+"*", c.onReply)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("load: subscribe: %w", err)
	}
	if err := c.sub.SetPendingLimits(-1, -1); err != nil {
		nc.Close()
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// send publishes requests until end: as fast as slots come free when rate
// is 0, otherwise at rate requests per second.
func (c *natsConn) send(ctx context.Context, cfg Config, end time.Time) {
	rate := cfg.Rate / float64(cfg.Conns)
	seq := keyseq.NewSeq()
	buf := make([]byte, 0, 64*c.batch+32)
	p := pacer{start: c.base, rate: rate}
	var sent int64
	for {
		now := time.Now()
		if !now.Before(end) || ctx.Err() != nil {
			return
		}
		n := int64(1 << 30)
		if rate > 0 {
			n = p.due(now) - sent
			if n <= 0 {
				// Sleep until the next request is due; the timer's own
				// slack shows up as send lag. Go's timers are woken by
				// the network poller, which waits in whole milliseconds:
				// here a 250 µs sleep lasted about 1.1 ms, so requests go
				// out in bursts about a millisecond apart whatever Tick
				// says. (A thread sleeping in nanosleep was precise, but
				// it held one of the two Ps while asleep and made every
				// latency worse, the NATS echo's included.)
				time.Sleep(max(p.at(sent).Sub(now), cfg.Tick))
				continue
			}
		}
		for ; n > 0; n-- {
			var slot int
			select {
			case slot = <-c.free:
			case <-ctx.Done():
				return
			}
			buf = c.appendRequest(buf[:0], &seq)
			t := time.Since(c.base)
			if rate > 0 {
				c.lag.Record(t - p.at(sent).Sub(c.base))
			}
			c.start[slot].Store(int64(t))
			c.outstanding.Add(1)
			if err := c.nc.PublishRequest(c.subject, c.replies[slot], buf); err != nil {
				c.outstanding.Add(-1)
				c.fail(err.Error())
				c.free <- slot
				return
			}
			sent++
			if rate == 0 && sent&1023 == 0 && !time.Now().Before(end) {
				return
			}
		}
	}
}

func (c *natsConn) appendRequest(b []byte, seq *keyseq.Seq) []byte {
	if c.batch == 1 {
		return append(b, c.items[seq.Next(len(c.items))]...)
	}
	b = append(b, `{"requests":[`...)
	for i := range c.batch {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, c.items[seq.Next(len(c.items))]...)
	}
	return append(b, "]}"...)
}

var (
	allowedField = []byte(`"allowed":`)
	errorHeader  = "Nats-Service-Error"
	errorCode    = "Nats-Service-Error-Code"
)

// onReply runs on the subscription's goroutine, one reply at a time.
func (c *natsConn) onReply(m *nats.Msg) {
	now := time.Since(c.base)
	slot, err := strconv.Atoi(m.Subject[len(c.prefix):])
	if err != nil || slot < 0 || slot >= len(c.start) {
		c.fail("reply on unexpected subject " + m.Subject)
		return
	}
	lat := now - time.Duration(c.start[slot].Load())

	allowed, denied, errMsg := parseReply(m, c.batch)

	c.mu.Lock()
	if errMsg != "" {
		c.res.Errors += uint64(c.batch - allowed - denied)
		if c.res.FirstError == "" {
			c.res.FirstError = errMsg
		}
	}
	if allowed+denied > 0 {
		c.res.Requests++
		c.res.Checks += uint64(allowed + denied)
		c.res.Denied += uint64(denied)
		c.res.Latency.Record(lat)
	}
	c.mu.Unlock()
	c.last.Store(int64(now))
	c.outstanding.Add(-1)
	c.free <- slot
}

func (c *natsConn) fail(msg string) {
	c.mu.Lock()
	c.res.Errors++
	if c.res.FirstError == "" {
		c.res.FirstError = msg
	}
	c.mu.Unlock()
}

// parseReply counts the decisions in a reply to a request of batch keys;
// errMsg is set if the whole request failed or some items did.
func parseReply(m *nats.Msg, batch int) (allowed, denied int, errMsg string) {
	if code := m.Header.Get(errorCode); code != "" {
		return 0, 0, code + " " + m.Header.Get(errorHeader)
	}
	data := m.Data
	for {
		i := bytes.Index(data, allowedField)
		if i < 0 {
			break
		}
		data = data[i+len(allowedField):]
		if len(data) > 0 && data[0] == 't' {
			allowed++
		} else {
			denied++
		}
	}
	if allowed+denied != batch {
		errMsg = fmt.Sprintf("reply decides %d of %d keys: %.200s", allowed+denied, batch, m.Data)
	}
	return allowed, denied, errMsg
}

// runRequests is Run with nc.Request from cfg.InFlight goroutines.
func (t NATS) runRequests(ctx context.Context, cfg Config, items [][]byte) (*Result, error) {
	opts := append([]nats.Option{nats.Name("fluxload"), nats.NoReconnect()}, t.Options...)
	conns := make([]*natsConn, cfg.Conns)
	for i := range conns {
		nc, err := nats.Connect(t.URL, opts...)
		if err != nil {
			return nil, fmt.Errorf("load: connect %s: %w", t.URL, err)
		}
		defer nc.Close()
		conns[i] = &natsConn{nc: nc, subject: SubjectCheck, batch: cfg.Batch, items: items}
		if cfg.Batch > 1 {
			conns[i].subject = SubjectCheckBatch
		}
		if t.Subject != "" {
			conns[i].subject = t.Subject
		}
	}
	results := make([]Result, cfg.InFlight)
	base := time.Now()
	end := base.Add(cfg.Duration)
	var wg sync.WaitGroup
	for w := range cfg.InFlight {
		c, res := conns[w%len(conns)], &results[w]
		wg.Go(func() {
			seq := keyseq.NewSeq()
			buf := make([]byte, 0, 64*c.batch+32)
			for time.Now().Before(end) && ctx.Err() == nil {
				buf = c.appendRequest(buf[:0], &seq)
				t0 := time.Now()
				m, err := c.nc.Request(c.subject, buf, cfg.Timeout)
				lat := time.Since(t0)
				if err != nil {
					res.Errors += uint64(c.batch)
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
					continue
				}
				allowed, denied, errMsg := parseReply(m, c.batch)
				if errMsg != "" {
					res.Errors += uint64(c.batch - allowed - denied)
					if res.FirstError == "" {
						res.FirstError = errMsg
					}
				}
				if allowed+denied > 0 {
					res.Requests++
					res.Checks += uint64(allowed + denied)
					res.Denied += uint64(denied)
					res.Latency.Record(lat)
				}
			}
		})
	}
	wg.Wait()
	res := &Result{Name: cfg.Name, Batch: cfg.Batch, Elapsed: time.Since(base)}
	for i := range results {
		res.merge(&results[i])
	}
	return res, ctx.Err()
}
