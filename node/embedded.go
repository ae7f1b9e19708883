package node

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// maxReplyItem bounds the encoded size of one check_batch result, to size
// the embedded server's max_payload so that the largest batch's reply fits.
const maxReplyItem = 320

// serverMaxPayload is the embedded server's max_payload: above the node's
// own bound (so an oversized request reaches the node and is answered 413
// instead of being refused by NATS) and large enough for the largest reply.
func serverMaxPayload(cfg Config) int32 {
	p := max(2*cfg.MaxPayload, cfg.MaxBatch*maxReplyItem+4096, 1<<20)
	return int32(min(p, 48<<20))
}

// startEmbedded starts the embedded NATS server and returns its client URL.
func (n *Node) startEmbedded(ctx context.Context, cfg Config) (string, error) {
	host, port, err := splitHostPort(cfg.NATSListen, true)
	if err != nil {
		return "", err
	}
	if port == 0 {
		port = server.RANDOM_PORT // NATS reads 0 as its default port
	}
	if port != server.RANDOM_PORT {
		// NATS reports a port in use only after a timeout; check first so
		// the node fails at once, naming the flag.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return "", &ListenError{Flag: "--nats-listen", Addr: cfg.NATSListen, Err: err}
		}
		ln.Close()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return "", fmt.Errorf("flux-node: data dir (--data-dir): %w", err)
	}
	if n.dirLock, err = lockDataDir(cfg.DataDir); err != nil {
		return "", err
	}
	opts := &server.Options{
		ServerName: "flux-" + cfg.NodeID,
		Host:       host,
		Port:       port,
		NoSigs:     true,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		MaxPayload: serverMaxPayload(cfg),
	}
	if err := n.clusterServerOptions(cfg, opts); err != nil {
		return "", err
	}
	if cfg, err = cfg.withCredentials(); err != nil {
		return "", err
	}
	n.embAuth = newEmbeddedAuth(cfg)
	opts.CustomClientAuthentication = n.embAuth
	if cfg.TLSCert != "" {
		to := &server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, Timeout: 2}
		if cfg.TLSVerify {
			to.CaFile, to.Verify = cfg.TLSCA, true
		}
		tc, err := server.GenTLSConfig(to)
		if err != nil {
			return "", fmt.Errorf("flux-node: TLS (--tls-cert, --tls-key): %w", err)
		}
		opts.TLS, opts.TLSConfig, opts.TLSVerify, opts.TLSTimeout = true, tc, cfg.TLSVerify, 2
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return "", fmt.Errorf("flux-node: embedded NATS server: %w", err)
	}
	s.SetLoggerV2(natsLogger{l: n.log.With("component", "nats-server"), slow: newSlowLog(n.log.With("component", "nats-server"))}, false, false, false)
	n.srv = s
	s.Start()
	wait := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	if !s.ReadyForConnections(wait) {
		return "", &ListenError{Flag: "--nats-listen", Addr: cfg.NATSListen, Err: fmt.Errorf("embedded NATS server not ready after %v", wait)}
	}
	addr, ok := s.Addr().(*net.TCPAddr)
	if !ok {
		return "", errors.New("flux-node: embedded NATS server has no TCP address")
	}
	h := host
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		h = "127.0.0.1"
	}
	scheme := "nats"
	if opts.TLS {
		scheme = "tls"
	}
	u := (&url.URL{Scheme: scheme, Host: net.JoinHostPort(h, strconv.Itoa(addr.Port))}).String()
	n.log.Info("NATS listening", "client_url", u, "data_dir", cfg.DataDir, "jetstream", true)
	if a := s.ClusterAddr(); a != nil {
		n.log.Info("NATS routes listening", "cluster", opts.Cluster.Name, "cluster_addr", a.String(), "routes", []string(cfg.Routes))
	}
	if ip := net.ParseIP(host); (host == "" || (ip != nil && !ip.IsLoopback())) && cfg.Token == "" && cfg.User == "" {
		n.log.Warn("NATS listens beyond loopback without authentication: anyone who reaches it can use it; set --token or --user/--password")
	}
	return u, nil
}

// clientAuthOptions are the credentials and TLS settings of a client's
// NATS connection made with cfg (the check subcommand's; the node's own
// with an external NATS).
func clientAuthOptions(cfg Config) ([]nats.Option, error) {
	cfg, err := cfg.withCredentials()
	if err != nil {
		return nil, err
	}
	var opts []nats.Option
	switch {
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	return append(opts, tlsOptions(cfg)...), nil
}

// nodeAuthOptions are the credentials and TLS settings of the node's own
// connections (the service's, the store's): with the embedded server, its
// internal credential, which no client holds, and replies under
// nodeInboxPrefix, which no client may subscribe to (clients may read
// _INBOX.>, where the node's forwarded checks and store reads would
// otherwise be answered); else the configured credential.
func (n *Node) nodeAuthOptions(cfg Config) ([]nats.Option, error) {
	if n.embAuth == nil {
		return clientAuthOptions(cfg)
	}
	opts := []nats.Option{nats.UserInfo(n.embAuth.nodeUser, n.embAuth.nodePassword), nats.CustomInboxPrefix(nodeInboxPrefix)}
	return append(opts, tlsOptions(cfg)...), nil
}

// ServiceOptions are the connection options that log in to the node's
// embedded server with the node's own rights (every subject), for a
// program that embeds the node and serves subjects of its own beside it
// (a benchmark's echo responder). Never hand them to clients: they could
// then answer for the service. Nil when the node has no embedded server
// or is not started. Safe for simultaneous use once Start has returned.
func (n *Node) ServiceOptions() []nats.Option {
	if n.embAuth == nil {
		return nil
	}
	return []nats.Option{nats.UserInfo(n.embAuth.nodeUser, n.embAuth.nodePassword)}
}

// nodeInboxPrefix is where the node's own connections to the embedded
// server receive replies.
const nodeInboxPrefix = "_FLUX_NODE_INBOX"

// tlsOptions are the TLS settings of a connection made with cfg.
func tlsOptions(cfg Config) []nats.Option {
	var opts []nats.Option
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" && (cfg.TLSVerify || cfg.NATSURL != "") {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	return opts
}

// The embedded server's authorization separates the clients from the
// service. Clients (the configured token or user, or anyone when none is
// configured, on loopback by default) may publish requests on flux.v1.>
// and $SRV.> and subscribe to their reply inboxes, nothing else: they
// cannot subscribe to flux.v1.> (queue-subscribing to flux.v1.check would
// let them answer other clients' checks), nor touch the cluster's _FLUX.>
// subjects or JetStream. The node's own connections log in with a
// credential drawn at random at each start, which no client holds, and may
// do everything.

// Subjects of the client permissions.
const (
	// ClientPublish are the subjects clients may publish to.
	clientPublishService  = "flux.v1.>"
	clientPublishDiscover = "$SRV.>"
	// DefaultInboxPrefix is the reply inbox prefix of NATS clients that do
	// not set one (nats.go, the nats CLI, nats.js): clients of the shared
	// credential may subscribe to DefaultInboxPrefix + ".>".
	DefaultInboxPrefix = "_INBOX"
)

// ClientPermissions are the NATS permissions of a flux-node client whose
// replies come to inboxPrefix (DefaultInboxPrefix unless the client sets
// its own): publish requests on flux.v1.> and $SRV.>, subscribe to
// inboxPrefix.> only. The embedded server gives them to its clients;
// docs/PROTOCOL.md shows them for an external NATS.
func ClientPermissions(inboxPrefix string) *server.Permissions {
	return clientPermissions([]string{inboxPrefix + ".>"})
}

func clientPermissions(subscribe []string) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{clientPublishService, clientPublishDiscover}},
		Subscribe: &server.SubjectPermission{Allow: subscribe},
	}
}

// sharedInboxes are the subscriptions of the shared client credential:
// the reply prefixes the node answers (reply_prefixes, _INBOX. by
// default) that end a token; one ending in "_" names no subscribable
// subject, so its clients need a user of their own (client_users).
func sharedInboxes(cfg Config) []string {
	prefixes := cfg.ReplyPrefixes
	if len(prefixes) == 0 {
		prefixes = DefaultReplyPrefixes
	}
	var subs []string
	for _, p := range prefixes {
		if strings.HasSuffix(p, ".") {
			subs = append(subs, p+">")
		}
	}
	return subs
}

// embeddedAuth is the embedded server's server.Authentication. Safe for
// simultaneous use (read-only after creation).
type embeddedAuth struct {
	token, user, password  string // the clients' shared credential
	anyone                 bool   // no client credential configured: anyone on the client port
	nodeUser, nodePassword string // the node's own connections
	clients                *server.Permissions
	users                  map[string]clientUser // client_users
}

type clientUser struct {
	password string
	perms    *server.Permissions
}

// nodeUserName is the user the node's own connections log in as.
const nodeUserName = "flux-node-internal"

func newEmbeddedAuth(cfg Config) *embeddedAuth {
	var pw [32]byte
	_, _ = rand.Read(pw[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	a := &embeddedAuth{nodeUser: nodeUserName, nodePassword: hex.EncodeToString(pw[:]), clients: clientPermissions(sharedInboxes(cfg))}
	switch {
	case cfg.Token != "":
		a.token = cfg.Token
	case cfg.User != "":
		a.user, a.password = cfg.User, cfg.Password
	}
	a.users = make(map[string]clientUser, len(cfg.ClientUsers))
	for _, u := range cfg.ClientUsers {
		pw, err := u.password()
		if err != nil || pw == "" {
			continue // validated: only if the file changed since
		}
		a.users[u.User] = clientUser{password: pw, perms: ClientPermissions(u.inboxPrefix())}
	}
	a.anyone = a.token == "" && a.user == "" && len(cfg.ClientUsers) == 0
	return a
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// Check implements server.Authentication.
func (a *embeddedAuth) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	o := c.GetOpts()
	if o.Username == a.nodeUser {
		if !equal(o.Password, a.nodePassword) {
			return false
		}
		c.RegisterUser(&server.User{Username: a.nodeUser}) // no permissions: everything
		return true
	}
	if u, ok := a.users[o.Username]; ok {
		if !equal(o.Password, u.password) {
			return false
		}
		c.RegisterUser(&server.User{Username: o.Username, Permissions: u.perms})
		return true
	}
	switch {
	case a.anyone:
	case a.token != "" && equal(o.Token, a.token):
	case a.user != "" && equal(o.Username, a.user) && equal(o.Password, a.password):
	default:
		return false
	}
	c.RegisterUser(&server.User{Username: "flux-client", Permissions: a.clients})
	return true
}

// natsLogger sends the embedded server's logs to slog: notices at debug
// level (they are chatty) except slow-consumer notices, which are logged at
// WARN, rate-limited (a slow consumer is a client, often the node's own
// connection, being cut off); warnings and errors as such. A fatal error is
// logged, never exits the process.
type natsLogger struct {
	l    *slog.Logger
	slow *slowLog
}

func (g natsLogger) Noticef(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if g.slow != nil && strings.Contains(msg, "Slow Consumer") {
		g.slow.event("server", "NATS server: slow consumer (a client was cut off or its messages dropped)", "detail", msg)
		return
	}
	g.l.Debug(msg)
}
func (g natsLogger) Warnf(format string, v ...any)  { g.l.Warn(fmt.Sprintf(format, v...)) }
func (g natsLogger) Fatalf(format string, v ...any) { g.l.Error(fmt.Sprintf(format, v...)) }
func (g natsLogger) Errorf(format string, v ...any) { g.l.Error(fmt.Sprintf(format, v...)) }
func (g natsLogger) Debugf(format string, v ...any) { g.l.Debug(fmt.Sprintf(format, v...)) }
func (g natsLogger) Tracef(string, ...any)          {}
