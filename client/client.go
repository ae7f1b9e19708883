// Package client is the Go client of flux-node: it sends checks over an
// existing NATS connection and returns flux.Decision values and typed
// errors. The wire protocol it speaks is documented in docs/PROTOCOL.md.
//
//	nc, _ := nats.Connect(url)
//	c := client.New(nc)
//	d, err := c.Check(ctx, "api", "alice", 1)
//	if err == nil && !d.Allowed { /* wait d.RetryAfter */ }
//
// A denial is a Decision with Allowed false, never an error. Errors that
// correspond to a library error wrap its sentinel (flux.ErrEmptyKey,
// flux.ErrKeyTooLong, flux.ErrInvalidCost, flux.ErrCostExceedsCapacity,
// flux.ErrOverloaded, flux.ErrClosed), so code written against a local
// *flux.Limiter handles them the same way; the others wrap this package's
// sentinels (ErrUnknownLimiter, ErrTooLarge, ErrBadRequest, ErrServer).
// Every server error is a *Error carrying its code and description.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/trace"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/internal/wire"
	"github.com/fluxlimiter/flux/protocol"
	"github.com/fluxlimiter/flux/tracing"
)

// Subjects of the flux service (group flux.v1).
//
// Deprecated: use protocol.SubjectCheck, protocol.SubjectCheckBatch and
// protocol.SubjectLimiters, the protocol's one definition.
const (
	SubjectCheck      = protocol.SubjectCheck
	SubjectCheckBatch = protocol.SubjectCheckBatch
	SubjectLimiters   = protocol.SubjectLimiters
)

// DefaultTimeout bounds a request whose context has no deadline.
const DefaultTimeout = 2 * time.Second

// Sentinel errors for the service's errors that have no counterpart in the
// library. Match them with errors.Is.
var (
	// ErrUnknownLimiter: the node has no limiter of that name (code 404).
	ErrUnknownLimiter = errors.New("flux client: unknown limiter")
	// ErrTooLarge: the request's payload or batch exceeds the node's bounds
	// (code 413).
	ErrTooLarge = errors.New("flux client: request too large")
	// ErrBadRequest: the node could not use the request (code 400), for a
	// reason with no library sentinel (such as malformed JSON or a missing
	// limiter name).
	ErrBadRequest = errors.New("flux client: bad request")
	// ErrServer: the node failed (code 500 or an unexpected code).
	ErrServer = errors.New("flux client: server error")
	// ErrBadReply: the reply could not be decoded.
	ErrBadReply = errors.New("flux client: bad reply")
)

// Error is an error answered by the node: its code (as in the
// Nats-Service-Error-Code header), the reason word and description from
// the reply. It unwraps to the matching sentinel.
type Error struct {
	Code        int
	Reason      string
	Description string
}

// Error formats the code and description.
func (e *Error) Error() string {
	return fmt.Sprintf("flux-node answered %d %s: %s", e.Code, e.Reason, e.Description)
}

// Unwrap returns the sentinel matching the error's reason (or, for a
// reason this client does not know, its code).
func (e *Error) Unwrap() error {
	switch e.Reason {
	case wire.ReasonEmptyKey:
		return flux.ErrEmptyKey
	case wire.ReasonKeyTooLong:
		return flux.ErrKeyTooLong
	case wire.ReasonInvalidCost:
		return flux.ErrInvalidCost
	case wire.ReasonCostExceedsCapacity:
		return flux.ErrCostExceedsCapacity
	case wire.ReasonOverloaded:
		return flux.ErrOverloaded
	case wire.ReasonShuttingDown:
		return flux.ErrClosed
	case wire.ReasonUnknownLimiter:
		return ErrUnknownLimiter
	case wire.ReasonTooLarge:
		return ErrTooLarge
	}
	switch e.Code {
	case wire.CodeBadRequest:
		return ErrBadRequest
	case wire.CodeNotFound:
		return ErrUnknownLimiter
	case wire.CodeTooLarge:
		return ErrTooLarge
	case wire.CodeUnavailable:
		return flux.ErrOverloaded
	}
	return ErrServer
}

// Client sends checks to flux-node over a NATS connection it does not own.
// It is safe for simultaneous use by multiple goroutines.
type Client struct {
	nc      *nats.Conn
	timeout time.Duration
	tr      *tracing.Tracer // nil: tracing off
}

// Option configures a Client.
type Option func(*Client)

// WithTimeout sets how long a request waits for its reply when its context
// has no deadline (default DefaultTimeout).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithTracerProvider makes the client start an OpenTelemetry client span
// for each request (named after its subject, a child of the span in the
// request's context) and carry the span's trace context to the node in the
// NATS message headers (W3C traceparent), so that a node started with
// node.WithTracerProvider records its server span as the child. A check's
// span records the limiter, cost and decision (ratelimit.limiter,
// ratelimit.decision, ratelimit.remaining...), a batch's its size and how
// many items were allowed and denied; the raw key only with
// tracing.WithKeys among opts. With a nil or no-op provider (the default)
// no span is created and requests carry no headers.
func WithTracerProvider(tp trace.TracerProvider, opts ...tracing.Option) Option {
	return func(c *Client) { c.tr = tracing.New(tp, opts...) }
}

// InboxPrefix is the connection option that makes nc receive its replies
// under prefix (nats.CustomInboxPrefix). A client whose NATS user may
// subscribe only to its own inbox prefix (flux-node's client_users, or an
// external NATS as docs/PROTOCOL.md shows) connects with it, so that no
// other client can read its replies:
//
//	nc, err := nats.Connect(url, nats.UserInfo("alice", pw), client.InboxPrefix("_INBOX_alice"))
func InboxPrefix(prefix string) nats.Option { return nats.CustomInboxPrefix(prefix) }

// New returns a client over nc. Closing nc is the caller's business.
func New(nc *nats.Conn, opts ...Option) *Client {
	c := &Client{nc: nc, timeout: DefaultTimeout}
	for _, o := range opts {
		o(c)
	}
	return c
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// Check asks the node whether a request of cost for key is admitted by the
// named limiter, and records it if so. Cost 0 peeks.
func (c *Client) Check(ctx context.Context, limiter, key string, cost int) (flux.Decision, error) {
	if c.tr != nil {
		msg := nats.NewMsg(protocol.SubjectCheck)
		ctx, sp := c.tr.StartClient(ctx, protocol.SubjectCheck, msg.Header)
		sp.Check(limiter, key, cost)
		d, err := c.check(ctx, limiter, key, cost, msg.Header)
		sp.Result(d, err)
		endSpan(sp, err)
		return d, err
	}
	return c.check(ctx, limiter, key, cost, nil)
}

// check is Check, sending the headers h (nil: none).
func (c *Client) check(ctx context.Context, limiter, key string, cost int, h nats.Header) (flux.Decision, error) {
	bp := bufPool.Get().(*[]byte)
	*bp = wire.AppendCheck((*bp)[:0], limiter, key, cost)
	msg, err := c.request(ctx, protocol.SubjectCheck, *bp, h)
	bufPool.Put(bp)
	if err != nil {
		return flux.Decision{}, err
	}
	d, err := wire.DecodeDecision(msg.Data)
	if err != nil {
		return flux.Decision{}, fmt.Errorf("%w: %w", ErrBadReply, err)
	}
	return d, nil
}

// Request is one item of a batch.
type Request struct {
	Limiter string
	Key     string
	Cost    int
}

// Result answers one Request: a Decision, or Err (a *Error) if the node
// could not decide that item.
type Result struct {
	Decision flux.Decision
	Err      error
}

// CheckBatch sends reqs in one request and returns their results in the
// same order. Items may name different limiters. An item that fails has its
// own Err and the others are still decided; the returned error is for the
// request as a whole (a transport failure, a batch larger than the node
// accepts...).
func (c *Client) CheckBatch(ctx context.Context, reqs []Request) ([]Result, error) {
	out := make([]Result, len(reqs))
	return out, c.CheckBatchInto(ctx, reqs, out)
}

// CheckBatchInto is CheckBatch writing into out, which must be at least as
// long as reqs; it lets callers reuse a results slice.
func (c *Client) CheckBatchInto(ctx context.Context, reqs []Request, out []Result) error {
	if len(out) < len(reqs) {
		return fmt.Errorf("flux client: out has room for %d results, reqs has %d", len(out), len(reqs))
	}
	if c.tr != nil {
		msg := nats.NewMsg(protocol.SubjectCheckBatch)
		ctx, sp := c.tr.StartClient(ctx, protocol.SubjectCheckBatch, msg.Header)
		err := c.checkBatch(ctx, reqs, out, msg.Header)
		if sp.Recording() && err == nil {
			spanBatch(sp, reqs, out)
		}
		sp.Error(err)
		endSpan(sp, err)
		return err
	}
	return c.checkBatch(ctx, reqs, out, nil)
}

// spanBatch records a batch's size and decisions, and its limiter when
// every item names the same one.
func spanBatch(sp tracing.Span, reqs []Request, out []Result) {
	allowed, denied := 0, 0
	same := true
	for i, r := range out[:len(reqs)] {
		same = same && reqs[i].Limiter == reqs[0].Limiter
		switch {
		case r.Err != nil:
		case r.Decision.Allowed:
			allowed++
		default:
			denied++
		}
	}
	if same && len(reqs) > 0 {
		sp.Limiter(reqs[0].Limiter)
	}
	sp.Batch(len(reqs), allowed, denied)
}

// endSpan ends a request's span, recording the node's error code if it
// answered with an error.
func endSpan(sp tracing.Span, err error) {
	var e *Error
	if errors.As(err, &e) {
		sp.ErrorCode(strconv.Itoa(e.Code), e.Description)
	}
	sp.End()
}

// checkBatch is CheckBatchInto, sending the headers h (nil: none).
func (c *Client) checkBatch(ctx context.Context, reqs []Request, out []Result, h nats.Header) error {
	bp := bufPool.Get().(*[]byte)
	b := append((*bp)[:0], `{"requests":[`...)
	for i, r := range reqs {
		if i > 0 {
			b = append(b, ',')
		}
		b = wire.AppendCheck(b, r.Limiter, r.Key, r.Cost)
	}
	b = append(b, "]}"...)
	*bp = b
	msg, err := c.request(ctx, protocol.SubjectCheckBatch, b, h)
	bufPool.Put(bp)
	if err != nil {
		return err
	}
	n := 0
	err = wire.DecodeResults(msg.Data, func(i int, d flux.Decision, e *wire.ErrorBody) {
		if i >= len(reqs) {
			return
		}
		n = i + 1
		if e != nil {
			out[i] = Result{Err: &Error{Code: e.Code, Reason: e.Reason, Description: e.Description}}
		} else {
			out[i] = Result{Decision: d}
		}
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadReply, err)
	}
	if n != len(reqs) {
		return fmt.Errorf("%w: %d results for %d requests", ErrBadReply, n, len(reqs))
	}
	return nil
}

// LimiterInfo describes one limiter configured on the node.
//
// Deprecated: use protocol.LimiterInfo, the protocol's one definition
// (this is an alias of it).
type LimiterInfo = protocol.LimiterInfo

// Limiters lists the limiters of the node that answers.
func (c *Client) Limiters(ctx context.Context) ([]protocol.LimiterInfo, error) {
	if c.tr != nil {
		msg := nats.NewMsg(protocol.SubjectLimiters)
		ctx, sp := c.tr.StartClient(ctx, protocol.SubjectLimiters, msg.Header)
		infos, err := c.limiters(ctx, msg.Header)
		sp.Error(err)
		endSpan(sp, err)
		return infos, err
	}
	return c.limiters(ctx, nil)
}

// limiters is Limiters, sending the headers h (nil: none).
func (c *Client) limiters(ctx context.Context, h nats.Header) ([]protocol.LimiterInfo, error) {
	msg, err := c.request(ctx, protocol.SubjectLimiters, nil, h)
	if err != nil {
		return nil, err
	}
	var reply struct {
		Limiters []protocol.LimiterInfo `json:"limiters"`
	}
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReply, err)
	}
	return reply.Limiters, nil
}

// request sends data to subject, with the headers h if not nil, and
// returns the reply, turning a service error into an *Error.
func (c *Client) request(ctx context.Context, subject string, data []byte, h nats.Header) (*nats.Msg, error) {
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var msg *nats.Msg
	var err error
	if h == nil {
		msg, err = c.nc.RequestWithContext(ctx, subject, data)
	} else {
		msg, err = c.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Data: data, Header: h})
	}
	if err != nil {
		return nil, fmt.Errorf("flux client: %s: %w", subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		e := &Error{Description: msg.Header.Get(micro.ErrorHeader)}
		e.Code, _ = strconv.Atoi(code)
		if body, ok := wire.DecodeErrorReply(msg.Data); ok {
			e.Reason = body.Reason
			if body.Description != "" {
				e.Description = body.Description
			}
		}
		return nil, e
	}
	return msg, nil
}
