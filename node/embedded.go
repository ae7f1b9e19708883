package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
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
	switch {
	case cfg.Token != "":
		opts.Authorization = cfg.Token
	case cfg.User != "":
		opts.Username, opts.Password = cfg.User, cfg.Password
	}
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
	s.SetLoggerV2(natsLogger{n.log.With("component", "nats-server")}, false, false, false)
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

// clientAuthOptions are the credentials and TLS settings of a NATS
// connection made with cfg (the node's own, and the check subcommand's).
func clientAuthOptions(cfg Config) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" && (cfg.TLSVerify || cfg.NATSURL != "") {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	return opts, nil
}

// natsLogger sends the embedded server's logs to slog: notices at debug
// level (they are chatty), warnings and errors as such. A fatal error is
// logged, never exits the process.
type natsLogger struct{ l *slog.Logger }

func (g natsLogger) Noticef(format string, v ...any) { g.l.Debug(fmt.Sprintf(format, v...)) }
func (g natsLogger) Warnf(format string, v ...any)   { g.l.Warn(fmt.Sprintf(format, v...)) }
func (g natsLogger) Fatalf(format string, v ...any)  { g.l.Error(fmt.Sprintf(format, v...)) }
func (g natsLogger) Errorf(format string, v ...any)  { g.l.Error(fmt.Sprintf(format, v...)) }
func (g natsLogger) Debugf(format string, v ...any)  { g.l.Debug(fmt.Sprintf(format, v...)) }
func (g natsLogger) Tracef(string, ...any)           {}
