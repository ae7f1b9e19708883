package node

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/fluxlimiter/flux/bus"
	"github.com/fluxlimiter/flux/cluster"
	"github.com/fluxlimiter/flux/failure"
)

// This file is the cluster's configuration (docs/CLUSTER.md): the settings
// of Config and LimiterConfig, their validation, and the embedded server's
// route options they imply.

// DefaultClusterName is the cluster a node belongs to unless cluster_name
// (--cluster-name) says otherwise: the embedded server's route cluster and
// the namespace of the internal subjects (_FLUX.v1.flux.>).
const DefaultClusterName = "flux"

// ClusterConfig is how a node takes part in a cluster. Its fields are
// settings of Config (flat YAML keys, like the flags). A node coordinates
// with others when one of its limiters has a mode other than local, or when
// ClusterListen or Routes is set.
type ClusterConfig struct {
	// ClusterName names the cluster (--cluster-name; DefaultClusterName
	// when empty): 1 to 64 of A-Z a-z 0-9 _ -. Nodes coordinate only with
	// nodes of the same name, so several clusters can share one NATS.
	ClusterName string `yaml:"cluster_name"`
	// ClusterListen is the HOST:PORT where the embedded NATS server takes
	// routes from the other nodes' servers (--cluster-listen); port -1
	// picks a free one. Empty: the embedded server is not clustered.
	ClusterListen string `yaml:"cluster_listen"`
	// Routes are the other servers' route URLs, nats-route://HOST:PORT
	// (--routes, comma-separated; in YAML a list or one comma-separated
	// string). The same full list may be given to every node, its own
	// route included.
	Routes Routes `yaml:"routes"`
	// Heartbeat is the interval of the membership heartbeats (--heartbeat;
	// bus.DefaultHeartbeat, 1s, when zero). A node missing three is
	// dropped by its peers.
	Heartbeat Duration `yaml:"heartbeat"`
	// ClusterSecretFile is a file holding the cluster secret
	// (--cluster-secret-file); without one, the secret is read from the
	// environment variable FLUX_CLUSTER_SECRET (EnvClusterSecret). Every
	// node of a cluster has the same secret, at least bus.MinSecretLen
	// bytes once white space around it is trimmed: nodes sign everything
	// they send each other with it, and the embedded servers' routes log
	// in with a password derived from it. A clustered node without one
	// does not start.
	ClusterSecretFile string `yaml:"cluster_secret_file"`
	// ClusterSecret is the secret itself, for programs that embed a node;
	// it wins over the file and the environment. It is never read from
	// YAML: a config file is often readable by more people than a secret
	// should be.
	ClusterSecret []byte `yaml:"-"`
	// ClusterTLSCert and ClusterTLSKey are the PEM certificate and key the
	// embedded server presents on its routes, and ClusterTLSCA the CA its
	// peers' certificates must be signed by (--cluster-tls-cert,
	// --cluster-tls-key, --cluster-tls-ca; all three or none). Optional:
	// without them routes are authenticated (the route password) but not
	// encrypted.
	ClusterTLSCert string `yaml:"cluster_tls_cert"`
	ClusterTLSKey  string `yaml:"cluster_tls_key"`
	ClusterTLSCA   string `yaml:"cluster_tls_ca"`
}

// EnvClusterSecret is the environment variable a clustered node reads its
// secret from when no cluster_secret_file is given.
const EnvClusterSecret = "FLUX_CLUSTER_SECRET"

// errNoSecret is wrapped by the errors of a missing or short secret.
var errNoSecret = fmt.Errorf("%w: a cluster needs a secret of at least %d bytes, the same on every node: give --cluster-secret-file (cluster_secret_file) or set %s (generate one with: openssl rand -base64 32)",
	ErrInvalidConfig, bus.MinSecretLen, EnvClusterSecret)

// clusterSecret returns the cluster secret: ClusterSecret, else the file's
// content, else the environment's, trimmed of white space. It fails when
// there is none or it is shorter than bus.MinSecretLen.
func (c Config) clusterSecret() ([]byte, error) {
	var s []byte
	from := "the environment variable " + EnvClusterSecret
	switch {
	case c.ClusterSecret != nil:
		s, from = c.ClusterSecret, "ClusterSecret"
	case c.ClusterSecretFile != "":
		b, err := os.ReadFile(c.ClusterSecretFile)
		if err != nil {
			return nil, fmt.Errorf("%w: cluster_secret_file (--cluster-secret-file): %w", ErrInvalidConfig, err)
		}
		s, from = bytes.TrimSpace(b), "cluster_secret_file "+c.ClusterSecretFile
	default:
		s = []byte(strings.TrimSpace(os.Getenv(EnvClusterSecret)))
	}
	if len(s) == 0 {
		return nil, errNoSecret
	}
	if len(s) < bus.MinSecretLen {
		return nil, fmt.Errorf("%w (%s holds %d)", errNoSecret, from, len(s))
	}
	return s, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// routeUser is the user the embedded servers' routes log in as; its
// password is derived from the cluster secret (routePassword).
const routeUser = "flux-route"

// routePassword derives the routes' password from the cluster secret, so
// that one secret protects both layers and a route password seen in a
// server's configuration does not reveal the secret.
func routePassword(secret []byte, cluster string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("flux route password v1\x00" + cluster))
	return hex.EncodeToString(m.Sum(nil))
}

// LimiterClusterConfig is how one limiter takes part in the cluster: the
// cluster settings of LimiterConfig (docs/CLUSTER.md states what each mode
// guarantees).
type LimiterClusterConfig struct {
	// Mode is local (the default: no coordination), best-effort, strict or
	// hybrid.
	Mode string `yaml:"mode"`
	// SyncInterval is how long admissions are aggregated before they are
	// gossiped (best-effort, strict and hybrid; cluster.DefaultSyncInterval
	// when zero).
	SyncInterval Duration `yaml:"sync_interval"`
	// OwnerDeadline is how long a check waits for the key's owner before
	// OnOwnerFailure decides (strict and hybrid;
	// cluster.DefaultOwnerDeadline when zero).
	OwnerDeadline Duration `yaml:"owner_deadline"`
	// OnOwnerFailure is local (decide on the local view, the default),
	// open (allow) or closed (deny) (strict and hybrid).
	OnOwnerFailure string `yaml:"on_owner_failure"`
	// HybridThreshold is the share of the key's capacity the local view
	// must show left after a request for the node to decide it alone
	// (hybrid; cluster.DefaultHybridThreshold when zero).
	HybridThreshold float64 `yaml:"hybrid_threshold"`
}

// Routes is a list of route URLs. In YAML it is a list of strings or one
// comma-separated string.
type Routes []string

// UnmarshalYAML reads a list or a comma-separated string.
func (r *Routes) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var s string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*r = ParseRoutes(s)
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*r = l
	return nil
}

// ParseRoutes splits a comma-separated list of route URLs, dropping empty
// entries and spaces around them.
func ParseRoutes(s string) Routes {
	var r Routes
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			r = append(r, u)
		}
	}
	return r
}

// clusterMode is the mode a limiter's configuration names.
func (lc LimiterConfig) clusterMode() cluster.Mode {
	m, _ := cluster.ParseMode(lc.Mode) // validated
	return m
}

// clusterConfig is the Coordinator's configuration of the limiter.
func (lc LimiterConfig) clusterConfig() cluster.LimiterConfig {
	f, _ := failure.Parse(lc.OnOwnerFailure) // validated
	return cluster.LimiterConfig{
		Mode:            lc.clusterMode(),
		SyncInterval:    time.Duration(lc.SyncInterval),
		OwnerDeadline:   time.Duration(lc.OwnerDeadline),
		OnOwnerFailure:  f,
		HybridThreshold: lc.HybridThreshold,
	}
}

// clustered reports whether the node coordinates with others.
func (c Config) clustered() bool {
	if c.ClusterListen != "" || len(c.Routes) > 0 {
		return true
	}
	for _, lc := range c.Limiters {
		if lc.clusterMode() != cluster.Local {
			return true
		}
	}
	return false
}

func (c Config) clusterName() string {
	if c.ClusterName == "" {
		return DefaultClusterName
	}
	return c.ClusterName
}

// validateCluster reports the problems of the cluster settings.
func (c Config) validateCluster() []error {
	var problems []error
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...)))
	}
	if c.ClusterName != "" && bus.ValidNodeID(c.ClusterName) != nil {
		bad("cluster_name (--cluster-name) %q: want 1 to %d of A-Z a-z 0-9 _ -", c.ClusterName, bus.MaxNodeIDLen)
	}
	if c.ClusterListen != "" {
		if _, _, err := splitHostPort(c.ClusterListen, true); err != nil {
			bad("cluster_listen (--cluster-listen) %q: %v", c.ClusterListen, err)
		}
	}
	for _, r := range c.Routes {
		if u, err := url.Parse(r); err != nil || u.Hostname() == "" || u.Port() == "" {
			bad("routes (--routes): %q is not a route URL like nats-route://HOST:PORT", r)
		}
	}
	if c.NATSURL != "" && (c.ClusterListen != "" || len(c.Routes) > 0) {
		bad("cluster_listen and routes cluster the embedded NATS server; with nats_url (--nats-url) the NATS deployment is clustered by its own configuration")
	}
	if c.NATSURL == "" && len(c.Routes) > 0 && c.ClusterListen == "" {
		bad("routes (--routes) need cluster_listen (--cluster-listen): the route port of this node's embedded server")
	}
	if n := btoi(c.ClusterTLSCert != "") + btoi(c.ClusterTLSKey != "") + btoi(c.ClusterTLSCA != ""); n != 0 && n != 3 {
		bad("cluster_tls_cert, cluster_tls_key and cluster_tls_ca go together")
	} else if n == 3 && c.ClusterListen == "" {
		bad("cluster_tls_cert, cluster_tls_key and cluster_tls_ca are for the routes of cluster_listen (--cluster-listen)")
	}
	if c.ClusterSecretFile != "" {
		if _, err := c.clusterSecret(); err != nil {
			problems = append(problems, err)
		}
	}
	if c.Heartbeat < 0 || time.Duration(c.Heartbeat) > time.Minute {
		bad("heartbeat (--heartbeat) %v: want 0 (the default, %v) to 1m", c.Heartbeat, bus.DefaultHeartbeat)
	}
	if c.clustered() && c.NodeID != "" && bus.ValidNodeID(c.NodeID) != nil {
		bad("node_id (--node-id) %q: a node in a cluster needs 1 to %d of A-Z a-z 0-9 _ -", c.NodeID, bus.MaxNodeIDLen)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Limiters)) {
		lc := c.Limiters[name]
		mode, err := cluster.ParseMode(lc.Mode)
		if err != nil {
			bad("limiter %q: mode %q: want local, best-effort, strict or hybrid", name, lc.Mode)
			continue
		}
		if _, err := failure.Parse(lc.OnOwnerFailure); err != nil {
			bad("limiter %q: on_owner_failure %q: want local, open or closed", name, lc.OnOwnerFailure)
		}
		if lc.SyncInterval < 0 || lc.OwnerDeadline < 0 {
			bad("limiter %q: negative sync_interval or owner_deadline", name)
		}
		if lc.HybridThreshold < 0 || lc.HybridThreshold > 1 || lc.HybridThreshold != lc.HybridThreshold {
			bad("limiter %q: hybrid_threshold %v: want 0 (the default, %v) to 1", name, lc.HybridThreshold, cluster.DefaultHybridThreshold)
		}
		// Settings the mode does not use are refused: a typo in the mode
		// must not silently drop them.
		if mode == cluster.Local && lc.SyncInterval != 0 {
			bad("limiter %q: sync_interval is for the modes best-effort, strict and hybrid", name)
		}
		if mode < cluster.Strict && (lc.OwnerDeadline != 0 || lc.OnOwnerFailure != "") {
			bad("limiter %q: owner_deadline and on_owner_failure are for the modes strict and hybrid", name)
		}
		if mode != cluster.Hybrid && lc.HybridThreshold != 0 {
			bad("limiter %q: hybrid_threshold is for the mode hybrid", name)
		}
	}
	return problems
}

// clusterServerOptions makes the embedded server take routes at
// cluster_listen and route to routes.
func (n *Node) clusterServerOptions(cfg Config, opts *server.Options) error {
	if cfg.ClusterListen == "" {
		return nil
	}
	host, port, err := splitHostPort(cfg.ClusterListen, true)
	if err != nil {
		return err
	}
	if port == 0 {
		port = server.RANDOM_PORT // 0 would mean no route port
	}
	if port != server.RANDOM_PORT {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return &ListenError{Flag: "--cluster-listen", Addr: cfg.ClusterListen, Err: err}
		}
		ln.Close()
	}
	secret, err := cfg.clusterSecret()
	if err != nil {
		return err
	}
	// Routes log in: a server that reaches the route port without the
	// password derived from the secret is refused, so it cannot join the
	// NATS cluster, read its traffic or take its clients.
	pw := routePassword(secret, cfg.clusterName())
	opts.Cluster = server.ClusterOpts{Name: cfg.clusterName(), Host: host, Port: port, PoolSize: -1,
		Username: routeUser, Password: pw}
	if len(cfg.Routes) > 0 {
		opts.Routes = server.RoutesFromStr(strings.Join(cfg.Routes, ","))
	}
	if n.cl.serverOptions != nil {
		n.cl.serverOptions(opts)
	}
	for _, r := range opts.Routes {
		r.User = url.UserPassword(routeUser, pw)
	}
	if cfg.ClusterTLSCert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: cfg.ClusterTLSCert, KeyFile: cfg.ClusterTLSKey, CaFile: cfg.ClusterTLSCA, Verify: true, Timeout: 2,
		})
		if err != nil {
			return fmt.Errorf("flux-node: route TLS (--cluster-tls-cert, --cluster-tls-key, --cluster-tls-ca): %w", err)
		}
		tc.RootCAs = tc.ClientCAs // the same CA both ways, as nats-server's config file does for routes
		opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = tc, 2
	}
	if ip := net.ParseIP(host); host == "" || ip == nil || !ip.IsLoopback() {
		n.log.Warn("NATS routes listen beyond loopback: other machines can reach the route port; it takes only servers that log in with the cluster secret's route password, but traffic on it is not encrypted: keep it on a private network",
			"cluster_listen", cfg.ClusterListen)
	}
	return nil
}
