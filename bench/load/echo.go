package load

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// Subjects the echo responder answers.
const (
	SubjectEcho      = "fluxload.echo"
	SubjectEchoBatch = "fluxload.echo_batch"
)

// echoDecision is a flux-node decision reply, byte for byte in shape.
const echoDecision = `{"allowed":true,"limit":1001,"remaining":1000,"retry_after_ns":0,"reset_after_ns":999000,"delay_ns":0}`

// StartEcho starts a responder that answers SubjectEcho with a canned
// decision and SubjectEchoBatch with batch canned decisions, without
// reading the request: the NATS request-reply ceiling for replies of
// flux-node's size, measured with the same load generator. It serves each
// subject with subs subscriptions in one queue group on one connection,
// as flux-node's micro endpoints do; opts are extra connection options
// (credentials). Call the returned function to stop it.
func StartEcho(url string, subs, batch int, opts ...nats.Option) (func(), error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("fluxload echo")}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("load: echo: %w", err)
	}
	single := []byte(echoDecision)
	many := []byte(`{"results":[` + strings.TrimSuffix(strings.Repeat(echoDecision+",", batch), ",") + "]}")
	for range max(subs, 1) {
		for subj, reply := range map[string][]byte{SubjectEcho: single, SubjectEchoBatch: many} {
			sub, err := nc.QueueSubscribe(subj, "q", func(m *nats.Msg) { _ = m.Respond(reply) })
			if err == nil {
				err = sub.SetPendingLimits(-1, -1)
			}
			if err != nil {
				nc.Close()
				return nil, fmt.Errorf("load: echo: %w", err)
			}
		}
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	return nc.Close, nil
}
