// Package protocol names flux-node's wire protocol once, for the node
// (package node) and its clients (package client): the service and its
// subjects, and the description of a limiter that flux.v1.limiters
// answers. docs/PROTOCOL.md documents the bodies; the codec itself is
// internal (internal/wire).
//
// It depends only on the root package, so a client need not import the
// node, nor the node the client.
package protocol

import (
	"fmt"
	"time"

	"github.com/fluxlimiter/flux"
	fluxerrs "github.com/fluxlimiter/flux/internal/errs"
)

// Names of the NATS micro service and its subjects.
const (
	// ServiceName is the micro service's name ($SRV.PING.flux...).
	ServiceName = "flux"
	// Group prefixes every subject of the service's version 1.
	Group = "flux.v1"
	// SubjectCheck decides one check.
	SubjectCheck = Group + ".check"
	// SubjectCheckBatch decides a list of checks.
	SubjectCheckBatch = Group + ".check_batch"
	// SubjectLimiters lists the limiters a node serves.
	SubjectLimiters = Group + ".limiters"
)

// LimiterInfo describes one limiter configured on a node, as
// flux.v1.limiters answers it: its algorithm and the parameters that
// algorithm takes.
type LimiterInfo struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"`
	// Rate and Burst are set for gcra, token-bucket and leaky-bucket.
	Rate  *float64 `json:"rate,omitempty"`
	Burst *float64 `json:"burst,omitempty"`
	// Limit is set for the window algorithms, with Window and WindowNS,
	// or, for calendar-aligned fixed windows, Calendar and Timezone.
	Limit    int    `json:"limit,omitempty"`
	Window   string `json:"window,omitempty"`
	WindowNS int64  `json:"window_ns,omitempty"`
	Calendar string `json:"calendar,omitempty"`
	Timezone string `json:"timezone,omitempty"`
	// Capacity is the limit a decision reports for a fresh key.
	Capacity int64 `json:"capacity"`
}

// LimitersReply is the body of the flux.v1.limiters reply.
type LimitersReply struct {
	Limiters []LimiterInfo `json:"limiters"`
}

// FluxLimit returns the limiter's limit as a flux.Limit, such as
// httplimit.Remote takes to fill RateLimit-Policy, validated. It fails for
// an algorithm or a time zone this program does not know.
func (li LimiterInfo) FluxLimit() (flux.Limit, error) {
	l := flux.Limit{Algorithm: flux.Algorithm(li.Algorithm), Requests: li.Limit,
		Window: time.Duration(li.WindowNS), Calendar: flux.Calendar(li.Calendar)}
	if li.Rate != nil {
		l.Rate = *li.Rate
	}
	if li.Burst != nil {
		l.Burst = *li.Burst
	}
	if li.Timezone != "" && li.Timezone != "UTC" {
		loc, err := time.LoadLocation(li.Timezone)
		if err != nil {
			return flux.Limit{}, fmt.Errorf("limiter %q: %w: %w", li.Name, fluxerrs.InvalidWindow, err)
		}
		l.Location = loc
	}
	if err := l.Validate(); err != nil {
		return flux.Limit{}, fmt.Errorf("limiter %q: %w", li.Name, err)
	}
	return l, nil
}
