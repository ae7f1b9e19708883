package node

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fluxlimiter/flux/internal/wire"
	"github.com/fluxlimiter/flux/protocol"
)

// The node answers NATS micro's discovery requests ($SRV.PING, $SRV.INFO
// and $SRV.STATS, for all services, for "flux" and for this instance's
// id) with micro's own response types, so `nats micro ls|info|stats flux`
// and any micro client see the flux service as any other. STATS counts
// from the doors' counters: every request the node answered.

// Stats returns the flux service's statistics, as $SRV.STATS answers
// them: one endpoint per subject, counting every request the node
// answered there. Safe for simultaneous use.
func (n *Node) Stats() micro.Stats {
	s := n.svc
	st := micro.Stats{ServiceIdentity: n.identity(), Type: micro.StatsResponseType, Endpoints: []*micro.EndpointStats{}}
	if s == nil {
		return st
	}
	st.Started = s.started
	data := n.stats()
	for _, d := range s.doors {
		st.Endpoints = append(st.Endpoints, d.stats(data))
	}
	return st
}

func (n *Node) identity() micro.ServiceIdentity {
	id := ""
	if n.svc != nil {
		id = n.svc.id
	}
	return micro.ServiceIdentity{Name: protocol.ServiceName, ID: id, Version: Version,
		Metadata: map[string]string{"node_id": n.cfg.NodeID, "protocol": protocol.Group}}
}

func (n *Node) info() micro.Info {
	in := micro.Info{ServiceIdentity: n.identity(), Type: micro.InfoResponseType,
		Description: "Flux rate limiter: checks over NATS request-reply (docs/PROTOCOL.md)", Endpoints: []micro.EndpointInfo{}}
	for _, d := range n.svc.doors {
		in.Endpoints = append(in.Endpoints, micro.EndpointInfo{Name: d.name, Subject: d.subject, QueueGroup: micro.DefaultQueueGroup})
	}
	return in
}

// startDiscovery subscribes to micro's discovery subjects. Discovery
// replies go through the same reply rule as every other reply.
func (n *Node) startDiscovery() error {
	s := n.svc
	for verb, answer := range map[micro.Verb]func() any{
		micro.PingVerb:  func() any { return micro.Ping{ServiceIdentity: n.identity(), Type: micro.PingResponseType} },
		micro.InfoVerb:  func() any { return n.info() },
		micro.StatsVerb: func() any { return n.Stats() },
	} {
		for _, ids := range [][2]string{{"", ""}, {protocol.ServiceName, ""}, {protocol.ServiceName, s.id}} {
			subj, err := micro.ControlSubject(verb, ids[0], ids[1])
			if err != nil {
				return fmt.Errorf("flux-node: discovery: %w", err)
			}
			sub, err := n.nc.Subscribe(subj, func(m *nats.Msg) {
				n.reply(m, nil, mustJSON(answer()), wire.ErrorBody{})
			})
			if err != nil {
				return fmt.Errorf("flux-node: subscribe %s: %w", subj, err)
			}
			if err := sub.SetPendingLimits(subPendingMsgs, subPendingBytes); err != nil {
				return fmt.Errorf("flux-node: subscribe %s: %w", subj, err)
			}
			s.disco = append(s.disco, sub)
		}
	}
	return nil
}

// mustJSON encodes v, of a type that always encodes (micro's response
// types, the stats map).
func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
