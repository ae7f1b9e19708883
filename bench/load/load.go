// Package load drives rate-limit services with many requests in flight and
// measures throughput and latency: flux-node over NATS request-reply
// (NATS) and gubernator over gRPC (Gubernator), with the same key
// distribution, so that cmd/fluxload can compare them in one run.
package load

import (
	"fmt"
	"strings"
	"time"
)

// Config is one load run.
type Config struct {
	// Name labels the run in reports.
	Name string
	// Keys is the number of distinct keys, drawn uniformly at random.
	Keys int
	// KeyPrefix prefixes every key (keys are KeyPrefix + 0 .. Keys-1).
	KeyPrefix string
	// Batch is the number of keys per request: 1 uses the single-check
	// endpoint, more the batch endpoint.
	Batch int
	// InFlight is how many requests are outstanding at once (closed loop),
	// or the most that may be outstanding (open loop).
	InFlight int
	// Conns is the number of client connections the requests are spread
	// over.
	Conns int
	// Duration is how long requests are sent.
	Duration time.Duration
	// Rate, if > 0, sends at this many requests per second (open loop)
	// instead of as fast as replies allow.
	Rate float64
	// Timeout bounds each request; a request not answered in time counts as
	// an error.
	Timeout time.Duration
	// Tick is the shortest sleep of an open-loop sender between sends;
	// requests that fall due meanwhile are sent together (default 250µs:
	// waking every 20µs instead cost the shared CPU about 0.7 of a core more
	// at 50k requests/s, for no better latency).
	Tick time.Duration
}

func (c *Config) defaults() {
	if c.Keys <= 0 {
		c.Keys = 100_000
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = "user:"
	}
	if c.Batch <= 0 {
		c.Batch = 1
	}
	if c.InFlight <= 0 {
		c.InFlight = 256
	}
	if c.Conns <= 0 {
		c.Conns = 1
	}
	if c.Conns > c.InFlight {
		c.Conns = c.InFlight
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Tick <= 0 {
		c.Tick = 250 * time.Microsecond
	}
}

// Result is what a run measured. Latency is per request (a batch of
// Batch keys is one request), from the moment the request was handed to
// the client library to the moment its reply was read.
type Result struct {
	Name     string
	Batch    int
	Elapsed  time.Duration // from the first request sent to the last reply read
	Requests uint64        // requests answered without error
	Checks   uint64        // keys decided (Requests × Batch, minus failed items)
	Denied   uint64        // keys denied
	Errors   uint64        // failed requests or items, including timeouts
	Latency  Hist
	// Lag is, for an open-loop run, how late requests were sent relative to
	// their schedule (the generator's own slack); zero for closed loop.
	Lag Hist
	// Rate is the requested rate of an open-loop run.
	Rate float64
	// FirstError is the first error seen, if any.
	FirstError string
}

// ChecksPerSec returns decided keys per second.
func (r *Result) ChecksPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Checks) / r.Elapsed.Seconds()
}

// RequestsPerSec returns answered requests per second.
func (r *Result) RequestsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-34s %10.0f checks/s %9.0f req/s  p50 %8s  p99 %8s  p99.9 %8s  max %8s",
		r.Name, r.ChecksPerSec(), r.RequestsPerSec(),
		fmtDur(r.Latency.Quantile(0.5)), fmtDur(r.Latency.Quantile(0.99)),
		fmtDur(r.Latency.Quantile(0.999)), fmtDur(r.Latency.Max()))
	if r.Denied > 0 {
		fmt.Fprintf(&b, "  denied %d", r.Denied)
	}
	if r.Errors > 0 {
		fmt.Fprintf(&b, "  ERRORS %d (%s)", r.Errors, r.FirstError)
	}
	if r.Rate > 0 {
		fmt.Fprintf(&b, "  [open loop at %.0f req/s; send lag p99 %s]", r.Rate, fmtDur(r.Lag.Quantile(0.99)))
	}
	return b.String()
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	}
}

// merge adds a connection's or worker's share into r.
func (r *Result) merge(o *Result) {
	r.Requests += o.Requests
	r.Checks += o.Checks
	r.Denied += o.Denied
	r.Errors += o.Errors
	r.Latency.Merge(&o.Latency)
	r.Lag.Merge(&o.Lag)
	if r.FirstError == "" {
		r.FirstError = o.FirstError
	}
}

// pacer spreads an open-loop run's sends over time: due reports how many
// requests should have been sent by now in total.
type pacer struct {
	start time.Time
	rate  float64 // per second; 0 means closed loop
}

func (p pacer) due(now time.Time) int64 {
	return int64(now.Sub(p.start).Seconds() * p.rate)
}

// at returns when request i is scheduled.
func (p pacer) at(i int64) time.Time {
	return p.start.Add(time.Duration(float64(i) / p.rate * 1e9))
}
