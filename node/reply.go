package node

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fluxlimiter/flux/internal/wire"
)

// DefaultReplyPrefixes are the reply subjects the node answers unless
// reply_prefixes (--reply-prefixes) says otherwise: the inboxes NATS
// clients make by default.
var DefaultReplyPrefixes = []string{"_INBOX."}

// forbiddenReplies are subject prefixes the node never publishes a reply
// on, whatever reply_prefixes allows: its cluster's internal subjects, the
// JetStream and KV API and data (where the nats-kv store lives), the
// system account and the service's own subjects. The node publishes with
// its own rights, so a reply there would carry them for the client that
// chose the reply subject.
var forbiddenReplies = []string{"_FLUX.", "$KV.", "$JS.", "$JSC.", "$O.", "$SYS.", "$SRV.", Group + "."}

// replyRule decides which reply subjects the node publishes on: those
// starting with one of its prefixes and with none of forbiddenReplies.
// Requests naming another reply subject are dropped and counted
// (flux_node_replies_refused_total), and logged at debug level at most
// once a second. Safe for simultaneous use.
type replyRule struct {
	prefixes []string
	lastLog  atomic.Int64 // unix nanoseconds of the last log line
}

func newReplyRule(prefixes []string) *replyRule {
	if len(prefixes) == 0 {
		prefixes = DefaultReplyPrefixes
	}
	return &replyRule{prefixes: prefixes}
}

// allows reports whether a reply may be published on subject.
func (r *replyRule) allows(subject string) bool {
	ok := false
	for _, p := range r.prefixes {
		if strings.HasPrefix(subject, p) {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	for _, f := range forbiddenReplies {
		if strings.HasPrefix(subject, f) {
			return false
		}
	}
	// No wildcard: a reply goes to one subject.
	return !strings.ContainsAny(subject, "*> \t\r\n")
}

// validateReplyPrefixes reports the problems of reply_prefixes: each must
// be a subject prefix ending in "." or "_" that cannot reach a forbidden
// subject.
func validateReplyPrefixes(prefixes []string) []string {
	var problems []string
	for _, p := range prefixes {
		switch {
		case p == "" || strings.ContainsAny(p, "*> \t\r\n"):
			problems = append(problems, fmt.Sprintf("reply_prefixes (--reply-prefixes) %q: want a subject prefix without wildcards or spaces, such as _INBOX.", p))
			continue
		case !strings.HasSuffix(p, ".") && !strings.HasSuffix(p, "_"):
			problems = append(problems, fmt.Sprintf("reply_prefixes (--reply-prefixes) %q: want a prefix ending in . or _ (such as _INBOX.), so it names whole tokens", p))
			continue
		}
		for _, f := range forbiddenReplies {
			if strings.HasPrefix(p, f) || strings.HasPrefix(f, p) {
				problems = append(problems, fmt.Sprintf("reply_prefixes (--reply-prefixes) %q would let clients name the node's internal, store or service subjects (%s>) as reply subjects", p, f))
				break
			}
		}
	}
	return problems
}

// reply sends a request's answer, the one place where the node publishes
// a reply: body, or the error eb (micro's Nats-Service-Error headers and a
// JSON body {"error":{...}}) when eb.Code != 0. A reply subject the rule
// refuses gets nothing. buf is scratch for the error body; reply returns
// it, grown.
func (n *Node) reply(m *nats.Msg, buf, body []byte, eb wire.ErrorBody) []byte {
	to := m.Reply
	if to == "" {
		return buf
	}
	if !n.replies.allows(to) {
		n.met.ReplyRefused()
		if now := time.Now().UnixNano(); now-n.replies.lastLog.Load() >= int64(time.Second) {
			n.replies.lastLog.Store(now)
			n.log.Debug("request dropped: its reply subject is not an allowed inbox (reply_prefixes)",
				"subject", m.Subject, "reply", headerSafe(to[:min(len(to), 128)]))
		}
		return buf
	}
	var err error
	if eb.Code == 0 {
		err = n.pub.Publish(to, body)
	} else {
		buf = wire.AppendErrorReply(buf[:0], eb)
		err = n.pub.PublishMsg(&nats.Msg{
			Subject: to,
			Header: nats.Header{
				micro.ErrorHeader:     []string{headerSafe(eb.Description)},
				micro.ErrorCodeHeader: []string{codeString(eb.Code)},
			},
			Data: buf,
		})
	}
	if err != nil {
		n.log.Debug("reply", "error", err)
	}
	return buf
}

// publisher is where replies go: the node's NATS connection (a fake in
// tests that run the pipeline without NATS).
type publisher interface {
	Publish(subject string, data []byte) error
	PublishMsg(m *nats.Msg) error
}

// headerSafe keeps a header value on one line.
func headerSafe(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	}
	return s
}
