package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux/bus"
	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/cluster/clustertest"
)

// This file performs the attacks of issue 18 §3 on a node with its
// default settings: a rogue NATS server at the route port, a client
// credential used against the node's internal subjects and endpoints.

// clusteredConfig is a one-node cluster (its own route port, its only
// route: JetStream in a cluster needs one) with a secret.
func clusteredConfig(t *testing.T) Config {
	cfg := testConfig(t)
	ports, err := clustertest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClusterListen = fmt.Sprintf("127.0.0.1:%d", ports[0])
	cfg.Routes = Routes{"nats-route://" + cfg.ClusterListen}
	cfg.ClusterSecret = testClusterSecret
	cfg.Heartbeat = Duration(testHeartbeat)
	return cfg
}

// routeServer starts a NATS server that routes to the node's route port,
// as user (no credentials when nil), and returns it.
func routeServer(t *testing.T, to string, user *url.Userinfo) *server.Server {
	t.Helper()
	r := &url.URL{Scheme: "nats-route", Host: to, User: user}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		Cluster: server.ClusterOpts{Name: DefaultClusterName, Host: "127.0.0.1", Port: server.RANDOM_PORT, PoolSize: -1},
		Routes:  []*url.URL{r},
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("route server did not start")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// TestRogueRouteRefused: a nats-server that reaches a clustered node's
// route port without the route password derived from the cluster secret
// does not join (it could otherwise read and inject every message, and
// take the node's clients); one with the password does.
func TestRogueRouteRefused(t *testing.T) {
	n := startNode(t, clusteredConfig(t))
	addr := n.srv.ClusterAddr().String()

	rogue := routeServer(t, addr, nil)
	guess := routeServer(t, addr, url.UserPassword(routeUser, "guessed"))
	time.Sleep(1500 * time.Millisecond) // routes connect within milliseconds on loopback
	if got := n.srv.NumRoutes(); got != 0 || rogue.NumRoutes() != 0 || guess.NumRoutes() != 0 {
		t.Fatalf("routes: node %d, rogue %d, guessed password %d: want none", got, rogue.NumRoutes(), guess.NumRoutes())
	}

	peer := routeServer(t, addr, url.UserPassword(routeUser, routePassword(testClusterSecret, DefaultClusterName)))
	waitFor(t, "a route with the password", 5*time.Second, func() bool { return peer.NumRoutes() > 0 && n.srv.NumRoutes() > 0 })
}

// TestClusterNeedsSecret: a clustered node does not start without a
// secret, or with a short one; the secret comes from ClusterSecret, a
// file or the environment.
func TestClusterNeedsSecret(t *testing.T) {
	start := func(cfg Config) error {
		n, err := New(cfg, nil)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = n.Start(ctx)
		_ = n.Shutdown(context.Background())
		return err
	}
	t.Setenv(EnvClusterSecret, "")
	for _, tt := range []struct {
		name string
		set  func(*Config)
		ok   bool
	}{
		{"none", func(*Config) {}, false},
		{"short", func(c *Config) { c.ClusterSecret = []byte("too short") }, false},
		{"given", func(c *Config) { c.ClusterSecret = testClusterSecret }, true},
		{"strict limiter, no routes, none", func(c *Config) {
			c.ClusterListen, c.Routes = "", nil
			c.Limiters = map[string]LimiterConfig{"api": {Rate: 1, LimiterClusterConfig: LimiterClusterConfig{Mode: "strict"}}}
		}, false},
	} {
		cfg := clusteredConfig(t)
		cfg.ClusterSecret = nil
		tt.set(&cfg)
		err := start(cfg)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
			t.Errorf("%s: Start = %v", tt.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), EnvClusterSecret) {
			t.Errorf("%s: %v does not say where the secret goes", tt.name, err)
		}
	}

	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, append(testClusterSecret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := clusteredConfig(t)
	cfg.ClusterSecret, cfg.ClusterSecretFile = nil, file
	if err := start(cfg); err != nil {
		t.Fatalf("secret from a file: %v", err)
	}
	if err := os.WriteFile(file, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Validate with a short secret file: %v", err)
	}
	t.Setenv(EnvClusterSecret, " "+string(testClusterSecret)+"\n")
	cfg.ClusterSecretFile = ""
	if err := start(cfg); err != nil {
		t.Fatalf("secret from the environment: %v", err)
	}
}

// violations collects the asynchronous errors of a client connection
// (permissions violations).
type violations struct {
	mu   sync.Mutex
	errs []error
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	v.errs = append(v.errs, err)
	v.mu.Unlock()
}

func (v *violations) about(subject string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, err := range v.errs {
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
			return true
		}
	}
	return false
}

// TestClientCannotImpersonateService: with the default settings and with
// a token, a client queue-subscribes to flux.v1.check and check_batch in
// the service's queue group and answers "allowed" to whatever it gets; a
// victim then checks a key it has exhausted 100 times. The server refuses
// the subscriptions and every check is answered by the node: denied.
func TestClientCannotImpersonateService(t *testing.T) {
	for _, token := range []string{"", "s3cret"} {
		t.Run("token="+token, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Token = token
			n := startNode(t, cfg)
			opts := []nats.Option{}
			if token != "" {
				opts = append(opts, nats.Token(token))
			}
			var v violations
			attacker := connect(t, n, append(opts, nats.ErrorHandler(v.handler))...)
			allowed := []byte(`{"allowed":true,"limit":1,"remaining":1,"retry_after_ns":0,"reset_after_ns":0,"delay_ns":0}`)
			for _, subject := range []string{SubjectCheck, SubjectCheckBatch, "flux.v1.>"} {
				for range 8 {
					if _, err := attacker.QueueSubscribe(subject, "q", func(m *nats.Msg) { _ = m.Respond(allowed) }); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := attacker.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(allowed) }); err != nil {
					t.Fatal(err)
				}
			}
			_ = attacker.Flush()
			waitFor(t, "the subscriptions refused", 5*time.Second, func() bool { return v.about(SubjectCheck) && v.about("flux.v1.>") })

			victim := connect(t, n, opts...)
			if r := request(t, victim, SubjectCheck, `{"limiter":"slow","key":"victim"}`); r.code != 0 || !*decodeDecision(t, r.data).Allowed {
				t.Fatalf("first check: %d %s", r.code, r.data)
			}
			for i := range 100 {
				r := request(t, victim, SubjectCheck, `{"limiter":"slow","key":"victim"}`)
				if r.code != 0 || *decodeDecision(t, r.data).Allowed {
					t.Fatalf("check %d of an exhausted key: %d %s: answered by the impersonator", i, r.code, r.data)
				}
			}
		})
	}
}

// TestClientCannotReachInternals: a client (default settings, the
// node's one client credential) may not publish or subscribe on the
// cluster's subjects, nor use JetStream, while it can still check and
// discover the service.
func TestClientCannotReachInternals(t *testing.T) {
	cfg := clusteredConfig(t)
	cfg.Limiters["slow"] = LimiterConfig{Rate: 1, LimiterClusterConfig: LimiterClusterConfig{Mode: "best-effort"}}
	n := startNode(t, cfg)
	var v violations
	nc := connect(t, n, nats.ErrorHandler(v.handler))
	subj := bus.SubjectsFor(DefaultClusterName)

	if _, err := nc.Subscribe(subj.All(), func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	// A forged update denying "victim" for ten years, and a phantom member.
	tenYears := time.Now().Add(10 * 365 * 24 * time.Hour).UnixNano()
	forged := []byte{'U', 1, 4, 's', 'l', 'o', 'w', 1, 6, 'v', 'i', 'c', 't', 'i', 'm'}
	forged = binary.AppendVarint(forged, tenYears)
	forged = binary.AppendUvarint(forged, 1)
	for _, s := range []string{subj.Gossip(), subj.Heartbeat(), subj.Forward("test"), subj.Sync("test"), "$JS.API.INFO"} {
		m := nats.NewMsg(s)
		m.Header.Set(bus.HeaderNode, "phantom")
		m.Data = forged
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	_ = nc.Flush()
	waitFor(t, "the violations reported", 5*time.Second, func() bool {
		return v.about(subj.All()) && v.about(subj.Gossip()) && v.about("$JS.API.INFO")
	})
	if r := request(t, nc, SubjectCheck, `{"limiter":"slow","key":"victim"}`); r.code != 0 || !*decodeDecision(t, r.data).Allowed {
		t.Fatalf("victim after the forgery: %d %s", r.code, r.data)
	}
	if m, err := nc.Request("$SRV.PING.flux", nil, 2*time.Second); err != nil || len(m.Data) == 0 {
		t.Fatalf("discovery: %v", err)
	}
	if got := n.Cluster().Members(); got != 1 {
		t.Fatalf("%d members, want 1", got)
	}
	// The node's own requests (forwards, store reads) are answered where
	// clients may not subscribe.
	if p := n.nc.Opts.InboxPrefix; p == "" || strings.HasPrefix(p, DefaultInboxPrefix+".") || p == DefaultInboxPrefix {
		t.Fatalf("the node's inbox prefix %q is readable by clients", p)
	}
	if _, err := nc.Subscribe(nodeInboxPrefix+".>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	waitFor(t, "the node's inboxes refused", 5*time.Second, func() bool { return v.about(nodeInboxPrefix) })
}

// TestForgeryCounted: what reaches the internal subjects unsigned (here
// through a connection with every right, as on a misconfigured external
// NATS) is dropped and counted in flux_cluster_dropped_total.
func TestForgeryCounted(t *testing.T) {
	cfg := clusteredConfig(t)
	cfg.Limiters["slow"] = LimiterConfig{Rate: 1, LimiterClusterConfig: LimiterClusterConfig{Mode: "best-effort"}}
	n := startNode(t, cfg)
	subj := bus.SubjectsFor(DefaultClusterName)
	tenYears := time.Now().Add(10 * 365 * 24 * time.Hour).UnixNano()
	forged := []byte{'U', 1, 4, 's', 'l', 'o', 'w', 1, 6, 'v', 'i', 'c', 't', 'i', 'm'}
	forged = binary.AppendVarint(forged, tenYears)
	forged = binary.AppendUvarint(forged, 1)
	m := nats.NewMsg(subj.Gossip())
	m.Header.Set(bus.HeaderNode, "phantom")
	m.Data = forged
	if err := n.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the forgery counted", 5*time.Second, func() bool {
		return metric(t, n, "flux_cluster_dropped_total", map[string]string{"reason": "unauthenticated"}) == 1
	})
	nc := connect(t, n)
	if r := request(t, nc, SubjectCheck, `{"limiter":"slow","key":"victim"}`); r.code != 0 || !*decodeDecision(t, r.data).Allowed {
		t.Fatalf("victim after the forgery: %d %s", r.code, r.data)
	}
}

// TestCredentialsFromFileOrEnvironment: the client credential can come
// from a file or the environment instead of a flag (visible in ps).
func TestCredentialsFromFileOrEnvironment(t *testing.T) {
	t.Setenv(EnvToken, "")
	t.Setenv(EnvPassword, "")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.TokenFile = file
	n := startNode(t, cfg)
	if _, err := nats.Connect(n.ClientURL()); err == nil {
		t.Fatal("a client without the token from the file was let in")
	}
	nc := connect(t, n, nats.Token("from-a-file"))
	if r := request(t, nc, SubjectCheck, `{"limiter":"api","key":"a"}`); r.code != 0 {
		t.Fatalf("with the token: %d %s", r.code, r.data)
	}

	t.Setenv(EnvToken, "from-the-environment")
	n = startNode(t, testConfig(t))
	if _, err := nats.Connect(n.ClientURL(), nats.Token("wrong")); err == nil {
		t.Fatal("FLUX_TOKEN was not required")
	}
	connect(t, n, nats.Token("from-the-environment"))

	t.Setenv(EnvPassword, "pa55-env")
	cfg = testConfig(t)
	cfg.User = "flux"
	n = startNode(t, cfg)
	if _, err := nats.Connect(n.ClientURL(), nats.UserInfo("flux", "nope")); err == nil {
		t.Fatal("FLUX_PASSWORD was not required")
	}
	connect(t, n, nats.UserInfo("flux", "pa55-env"))

	t.Setenv(EnvPassword, "")
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), EnvPassword) {
		t.Fatalf("user without any password: %v", err)
	}
	cfg.PasswordFile = filepath.Join(t.TempDir(), "missing")
	if err := cfg.Validate(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing password file: %v", err)
	}
}

// TestClientUsersOwnInboxes: clients with users of their own may
// subscribe only to their own inbox prefix, so none reads another's
// replies (here: mallory subscribes to alice's inboxes, and to _INBOX.>,
// and is refused both), while each checks through its prefix; anonymous
// clients are refused once users are configured.
func TestClientUsersOwnInboxes(t *testing.T) {
	t.Setenv("ALICE_PW", "alice-pw")
	t.Setenv("MALLORY_PW", "mallory-pw")
	cfg := testConfig(t)
	cfg.ClientUsers = []ClientUser{{User: "alice", PasswordEnv: "ALICE_PW"}, {User: "mallory", PasswordEnv: "MALLORY_PW"}}
	n := startNode(t, cfg)
	if _, err := nats.Connect(n.ClientURL()); err == nil {
		t.Fatal("an anonymous client was let in")
	}
	alice := connect(t, n, nats.UserInfo("alice", "alice-pw"), client.InboxPrefix(DefaultUserInboxPrefix("alice")))
	var v violations
	mallory := connect(t, n, nats.UserInfo("mallory", "mallory-pw"), client.InboxPrefix("_INBOX_mallory"), nats.ErrorHandler(v.handler))
	stolen := make(chan *nats.Msg, 16)
	for _, s := range []string{"_INBOX_alice.>", "_INBOX.>", ">"} {
		if _, err := mallory.ChanSubscribe(s, stolen); err != nil {
			t.Fatal(err)
		}
	}
	_ = mallory.Flush()
	waitFor(t, "mallory's subscriptions refused", 5*time.Second, func() bool { return v.about("_INBOX_alice.>") && v.about("_INBOX.>") })
	for _, nc := range []*nats.Conn{alice, mallory} {
		if r := request(t, nc, SubjectCheck, `{"limiter":"api","key":"a"}`); r.code != 0 {
			t.Fatalf("check through %s: %d %s", nc.Opts.User, r.code, r.data)
		}
	}
	c := client.New(alice)
	if d, err := c.Check(t.Context(), "api", "b", 1); err != nil || !d.Allowed {
		t.Fatalf("Go client with its inbox prefix: %v %v", d, err)
	}
	select {
	case m := <-stolen:
		t.Fatalf("mallory read a reply on %s", m.Subject)
	case <-time.After(100 * time.Millisecond):
	}
	// Without its prefix, alice cannot receive replies.
	plain := connect(t, n, nats.UserInfo("alice", "alice-pw"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if _, err := plain.Request(SubjectCheck, []byte(`{"limiter":"api","key":"a"}`), 500*time.Millisecond); err == nil {
		t.Fatal("alice received a reply on _INBOX.>")
	}

	bad := testConfig(t)
	bad.ClientUsers = []ClientUser{
		{User: "w", PasswordEnv: "ALICE_PW", InboxPrefix: "_INBOX.w"},
		{User: "x", PasswordEnv: "ALICE_PW", InboxPrefix: "_INBOX_xy"},
		{User: "y", PasswordEnv: "ALICE_PW", InboxPrefix: "_INBOX_xy"},
		{User: "z"},
	}
	err := bad.Validate()
	for _, want := range []string{`"_INBOX.w"`, "share the inbox prefix", `user "z": give password_file or password_env`} {
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to mention %s", err, want)
		}
	}
}

// TestRouteListenBeyondLoopbackWarns: --cluster-listen :PORT binds every
// interface; the node says so.
func TestRouteListenBeyondLoopbackWarns(t *testing.T) {
	for _, tt := range []struct {
		host string
		warn bool
	}{{"", true}, {"127.0.0.1", false}} {
		ports, err := clustertest.FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		cfg := clusteredConfig(t)
		cfg.ClusterListen = fmt.Sprintf("%s:%d", tt.host, ports[0])
		cfg.Routes = Routes{fmt.Sprintf("nats-route://127.0.0.1:%d", ports[0])}
		var buf syncBuffer
		n, err := New(cfg, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = n.Start(ctx)
		cancel()
		_ = n.Shutdown(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(buf.String(), "routes listen beyond loopback"); got != tt.warn {
			t.Errorf("cluster_listen %q: warned %v, want %v; log:\n%s", cfg.ClusterListen, got, tt.warn, buf.String())
		}
	}
}

// TestRouteTLS: with cluster_tls_* the routes use TLS with certificates
// both ways: two nodes form their cluster, and a server that has the
// route password but no certificate is refused.
func TestRouteTLS(t *testing.T) {
	ca, cert, key := writeCerts(t, t.TempDir())
	ports, err := clustertest.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	var routes Routes
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	var nodes []*Node
	for i, p := range ports {
		cfg := clusterNodeConfig(t, i, map[string]LimiterConfig{"api": {Rate: 1, LimiterClusterConfig: LimiterClusterConfig{Mode: "best-effort"}}})
		cfg.ClusterListen = fmt.Sprintf("127.0.0.1:%d", p)
		cfg.Routes = routes
		cfg.ClusterTLSCert, cfg.ClusterTLSKey, cfg.ClusterTLSCA = cert, key, ca
		nodes = append(nodes, startNode(t, cfg))
	}
	waitFor(t, "two members over TLS routes", 10*time.Second, func() bool {
		return nodes[0].Cluster().Members() == 2 && nodes[1].Cluster().Members() == 2
	})
	plain := routeServer(t, fmt.Sprintf("127.0.0.1:%d", ports[0]), url.UserPassword(routeUser, routePassword(testClusterSecret, DefaultClusterName)))
	time.Sleep(1500 * time.Millisecond)
	if plain.NumRoutes() != 0 {
		t.Fatal("a route without TLS was accepted")
	}

	bad := testConfig(t)
	bad.ClusterListen = "127.0.0.1:1"
	bad.ClusterTLSCert = cert
	if err := bad.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "go together") {
		t.Fatalf("cluster_tls_cert alone: %v", err)
	}
}
