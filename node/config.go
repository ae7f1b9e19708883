package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	fluxerrs "github.com/fluxlimiter/flux/internal/errs"

	"go.yaml.in/yaml/v3"

	"github.com/fluxlimiter/flux"
)

// Defaults, documented in the README and docs/PROTOCOL.md.
const (
	// DefaultNATSListen is where the embedded NATS server listens for
	// clients: NATS's own port, on loopback.
	DefaultNATSListen = "127.0.0.1:4222"
	// DefaultHTTPListen is where the HTTP admin endpoints (/healthz, /readyz,
	// /metrics) listen. 8222 is NATS monitoring's port, so Flux uses 9464.
	DefaultHTTPListen = "127.0.0.1:9464"
	// DefaultMaxBatch is the most items a check_batch request may hold.
	DefaultMaxBatch = 1000
	// DefaultMaxPayload is the largest request body accepted, in bytes (1 MiB).
	DefaultMaxPayload = 1 << 20
	// DefaultOverloadWait is how long a check waits for room in a full shard
	// mailbox before it is answered 503 overloaded.
	DefaultOverloadWait = 250 * time.Millisecond
	// DefaultDrainTimeout bounds the drain on shutdown: requests still in
	// flight after it are dropped.
	DefaultDrainTimeout = 5 * time.Second
	// DefaultLimiterName is the limiter a node has when it is configured
	// with none.
	DefaultLimiterName = "default"
)

// Bounds on the configurable limits.
const (
	maxMaxPayload = 16 << 20
	maxMaxBatch   = 100_000
)

// DefaultLimiter is the limiter named "default" a node runs when its
// configuration names no limiter: 10 requests per second with a burst of 9,
// so a fresh key is admitted 10 times at once, then once every 100 ms.
var DefaultLimiter = LimiterConfig{Algorithm: "gcra", Rate: 10, Burst: 9}

// ErrInvalidConfig is wrapped by every configuration error.
var ErrInvalidConfig = errors.New("flux-node: invalid config")

// Config is everything a node is started with. The YAML file (LoadConfig)
// and the command-line flags of cmd/flux-node map onto it field by field;
// the YAML key of each field is given in its tag. It is a plain value: copy
// it freely.
type Config struct {
	// NATSListen is the host:port of the embedded NATS server
	// (--nats-listen). Port 0 or -1 picks a free port. Ignored when NATSURL
	// is set.
	NATSListen string `yaml:"nats_listen"`
	// NATSURL makes the node join that NATS deployment instead of
	// embedding a server (--nats-url). Comma-separated URLs are allowed.
	NATSURL string `yaml:"nats_url"`
	// HTTPListen is the host:port of the HTTP admin endpoints
	// (--http-listen); port 0 picks a free port, "" turns them off.
	HTTPListen string `yaml:"http_listen"`
	// DataDir is where the embedded server keeps JetStream data
	// (--data-dir); see DefaultDataDir.
	DataDir string `yaml:"data_dir"`
	// NodeID names the node in logs, in the service's metadata and in its
	// cluster (--node-id). Empty (the default): <host>-<7 random
	// characters>, generated on the first start and kept in DataDir, so
	// that two nodes on one machine differ and a node restarts under the
	// same id (with NATSURL, a new one at each start).
	NodeID string `yaml:"node_id"`
	// LogLevel is debug, info, warn or error (--log-level). The node does
	// not read it: cmd/flux-node sets up its logger from it.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text (the default: key=value lines) or json (one JSON
	// object a line, for log pipelines) (--log-format). Like LogLevel it is
	// read by cmd/flux-node, not by the node.
	LogFormat string `yaml:"log_format"`

	// Token is the NATS authorization token (--token); User and Password
	// are the NATS user and password (--user, --password). They are
	// required by the embedded server and presented by the node's own
	// connection. Token and User are exclusive.
	Token    string `yaml:"token"`
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// TokenFile and PasswordFile name files holding the token and the
	// password (--token-file, --password-file), which, unlike flags, do
	// not show in the process list; without them the environment
	// variables FLUX_TOKEN and FLUX_PASSWORD are read (Credentials).
	TokenFile    string `yaml:"token_file"`
	PasswordFile string `yaml:"password_file"`
	// ClientUsers are clients of the embedded server with users of their
	// own, each confined to its own reply inbox (YAML only; see
	// ClientUser).
	ClientUsers []ClientUser `yaml:"client_users"`
	// TLSCert and TLSKey are the PEM certificate and key of the embedded
	// server (--tls-cert, --tls-key); with NATSURL they are the node's
	// client certificate. TLSCA is the PEM CA bundle the node's connection
	// verifies the server with (--tls-ca); with TLSVerify (--tls-verify)
	// the embedded server also requires client certificates signed by it.
	TLSCert   string `yaml:"tls_cert"`
	TLSKey    string `yaml:"tls_key"`
	TLSCA     string `yaml:"tls_ca"`
	TLSVerify bool   `yaml:"tls_verify"`

	// MaxKeyLen is the longest key accepted, in bytes (--max-key-len).
	MaxKeyLen int `yaml:"max_key_len"`
	// MaxBatch is the most items a check_batch request may hold
	// (--max-batch).
	MaxBatch int `yaml:"max_batch"`
	// MaxPayload is the largest request body accepted, in bytes
	// (--max-payload).
	MaxPayload int `yaml:"max_payload"`
	// Handlers is how many workers answer each of check and check_batch
	// in parallel (--handlers); 0 means 2×GOMAXPROCS, at least 4. A check
	// worker decides every check waiting at its door together (see
	// door.go).
	Handlers int `yaml:"handlers"`
	// ReplyPrefixes are the reply subjects the node answers
	// (--reply-prefixes, comma-separated; DefaultReplyPrefixes, _INBOX.,
	// when empty): a request whose reply subject starts with none of them
	// is dropped unanswered. The node's internal, store and service
	// subjects are never answered (docs/PROTOCOL.md, "Reply subjects").
	ReplyPrefixes []string `yaml:"reply_prefixes"`
	// Shards is the number of shard goroutines per limiter (0: flux.DefaultShards(), half of GOMAXPROCS).
	Shards int `yaml:"shards"`
	// MaxKeys bounds the keys each limiter holds (0: no bound;
	// MaxKeysAuto, the default: derived from the memory available, see
	// DerivedMaxKeys); see flux.WithMaxKeys.
	MaxKeys int `yaml:"max_keys"`
	// OverloadWait is how long a check waits for room in a full shard
	// mailbox before it is answered 503.
	OverloadWait Duration `yaml:"overload_wait"`
	// DrainTimeout bounds the graceful drain on shutdown.
	DrainTimeout Duration `yaml:"drain_timeout"`

	// ClusterConfig: cluster_name, cluster_listen, routes, heartbeat
	// (node/cluster.go, docs/CLUSTER.md).
	ClusterConfig `yaml:",inline"`

	// StoreConfig: store, store_write, flush_interval, store_timeout,
	// store_prefix (node/store.go, docs/STORES.md).
	StoreConfig `yaml:",inline"`

	// TraceConfig: otlp_endpoint, trace_sample. The node does not read
	// them: cmd/flux-node sets up its exporter from them and passes the
	// node a TracerProvider (WithTracerProvider).
	TraceConfig `yaml:",inline"`

	// Limiters are the named limiters. A node configured with none runs
	// one named "default" (DefaultLimiter).
	Limiters map[string]LimiterConfig `yaml:"limiters"`
}

// TraceConfig is where flux-node exports its traces.
type TraceConfig struct {
	// OTLPEndpoint is the OTLP/HTTP collector traces are sent to, such as
	// http://127.0.0.1:4318 (--otlp-endpoint); /v1/traces is appended
	// unless the URL has a path. Empty: the standard
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
	// environment variable if set, else no tracing at all.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// TraceSample is the share of requests without a sampled parent whose
	// spans are recorded, from 0 to 1 (--trace-sample;
	// DefaultTraceSample when zero, and 0 cannot be asked for: leave the
	// endpoint empty to trace nothing). A request whose sender sampled
	// its trace (W3C traceparent) is always recorded.
	TraceSample float64 `yaml:"trace_sample"`
}

// DefaultTraceSample is the share of requests traced when TraceSample is
// zero: one in a hundred, so that tracing a busy node stays cheap.
const DefaultTraceSample = 0.01

// LimiterConfig is one named limiter: an algorithm and its parameters, as
// in flux.Limit (docs/ALGORITHMS.md compares the algorithms). gcra (the
// default), token-bucket and leaky-bucket take Rate and Burst; the window
// algorithms (sliding-window-log, sliding-window, fixed-window) take Limit
// and Window, and fixed-window may take Calendar (and Timezone) instead of
// Window. A parameter the algorithm does not take is an error, not
// ignored.
type LimiterConfig struct {
	// Algorithm is gcra (the default when empty), token-bucket,
	// leaky-bucket, sliding-window-log, sliding-window or fixed-window.
	Algorithm string `yaml:"algorithm"`
	// Rate is in requests per second; Burst is the requests admitted beyond
	// the steady rate (capacity after idle = floor(Burst)+1).
	Rate  float64 `yaml:"rate"`
	Burst float64 `yaml:"burst"`
	// Limit and Window are for the window algorithms: Limit requests per
	// Window (a Go duration such as "1m").
	Limit  int      `yaml:"limit"`
	Window Duration `yaml:"window"`
	// Calendar aligns fixed-window's windows to calendar units instead of
	// Window: minute, hour, day, week (from Monday) or month, in Timezone.
	Calendar string `yaml:"calendar"`
	// Timezone is the IANA time zone of Calendar windows, such as
	// "Europe/Paris"; empty means UTC. "Local" is refused: nodes sharing a
	// config must agree on where days begin.
	Timezone string `yaml:"timezone"`

	// LimiterClusterConfig: mode, sync_interval, owner_deadline,
	// on_owner_failure, hybrid_threshold (node/cluster.go).
	LimiterClusterConfig `yaml:",inline"`

	// LimiterStoreConfig: store_mode, store_failure (node/store.go).
	LimiterStoreConfig `yaml:",inline"`
}

// AlgorithmName returns the algorithm's name, "gcra" when empty.
func (lc LimiterConfig) AlgorithmName() string {
	if lc.Algorithm == "" {
		return string(flux.GCRA)
	}
	return lc.Algorithm
}

// FluxLimit translates the limiter's configuration into the library's
// flux.Limit, validated by flux.Limit.Validate: an unknown algorithm or a
// parameter the algorithm does not take fails with the library's sentinel
// errors (fluxerrs.InvalidAlgorithm, fluxerrs.InvalidWindow...). This is the
// one place where the configuration is mapped onto algorithms.
func (lc LimiterConfig) FluxLimit() (flux.Limit, error) {
	l := flux.Limit{
		Algorithm: flux.Algorithm(lc.Algorithm), // "" is gcra, as in flux.Limit
		Rate:      lc.Rate,
		Burst:     lc.Burst,
		Requests:  lc.Limit,
		Window:    time.Duration(lc.Window),
		Calendar:  flux.Calendar(lc.Calendar),
	}
	switch {
	case lc.Timezone == "":
	case lc.Calendar == "":
		return flux.Limit{}, fmt.Errorf("%w: timezone is only for fixed-window's calendar windows (calendar: day...)", fluxerrs.InvalidWindow)
	case lc.Timezone == "Local":
		return flux.Limit{}, fmt.Errorf("%w: timezone %q depends on the machine: name the zone, such as Europe/Paris", fluxerrs.InvalidWindow, lc.Timezone)
	default:
		loc, err := time.LoadLocation(lc.Timezone)
		if err != nil {
			return flux.Limit{}, fmt.Errorf("%w: timezone: %w", fluxerrs.InvalidWindow, err)
		}
		l.Location = loc
	}
	return l, l.Validate()
}

// Duration is a time.Duration written in YAML as a Go duration string
// ("250ms", "1m").
type Duration time.Duration

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// String formats the duration as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// DefaultDataDir is where a node keeps its data unless told otherwise:
// $XDG_DATA_HOME/flux-node, else ~/.local/share/flux-node, else
// flux-node under the system's temporary directory. It depends on neither
// ports nor ids, so a restarted node finds its data.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "flux-node")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".local", "share", "flux-node")
	}
	return filepath.Join(os.TempDir(), "flux-node")
}

// DefaultConfig returns the configuration of `flux-node` run without
// arguments.
func DefaultConfig() Config {
	return Config{
		NATSListen:   DefaultNATSListen,
		HTTPListen:   DefaultHTTPListen,
		DataDir:      DefaultDataDir(),
		LogLevel:     "info",
		MaxKeyLen:    1024, // the library's default too
		MaxBatch:     DefaultMaxBatch,
		MaxPayload:   DefaultMaxPayload,
		MaxKeys:      MaxKeysAuto,
		OverloadWait: Duration(DefaultOverloadWait),
		DrainTimeout: Duration(DefaultDrainTimeout),
		Limiters:     map[string]LimiterConfig{DefaultLimiterName: DefaultLimiter},
	}
}

// LoadConfig reads a YAML file over DefaultConfig: settings it omits keep
// their defaults, and a file without a limiters section gets the default
// limiter. Unknown settings are errors, so typos do not pass silently.
// The result is validated.
func LoadConfig(path string) (Config, error) {
	cfg, err := ReadConfig(path)
	if err != nil {
		return Config{}, err
	}
	return cfg, cfg.Validate()
}

// ReadConfig is LoadConfig without the validation, for a caller that sets
// more (flags over the file) and validates the whole: a file may rely on a
// setting given only on the command line, such as the store.
func ReadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return decodeConfig(path, data)
}

// ParseConfig is LoadConfig for a YAML document in memory.
func ParseConfig(data []byte) (Config, error) {
	cfg, err := decodeConfig("", data)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// decodeConfig reads a YAML document over DefaultConfig, unvalidated; file
// names it in errors ("" for none).
func decodeConfig(file string, data []byte) (Config, error) {
	cfg := DefaultConfig()
	cfg.Limiters = nil
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty document (io.EOF) means "all defaults".
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, configError(file, err)
	}
	if cfg.Limiters == nil {
		cfg.Limiters = map[string]LimiterConfig{DefaultLimiterName: DefaultLimiter}
	}
	return cfg, nil
}

var limiterName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Validate reports every problem with the configuration, joined, each
// wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	var problems []error
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...)))
	}
	if c.NATSURL == "" {
		if _, _, err := splitHostPort(c.NATSListen, true); err != nil {
			bad("nats_listen (--nats-listen) %q: %v", c.NATSListen, err)
		}
		if c.DataDir == "" {
			bad("data_dir (--data-dir) is empty")
		}
	}
	if c.HTTPListen != "" {
		if _, _, err := splitHostPort(c.HTTPListen, false); err != nil {
			bad("http_listen (--http-listen) %q: %v", c.HTTPListen, err)
		}
	}
	if strings.ContainsFunc(c.NodeID, unicode.IsSpace) {
		bad("node_id (--node-id) %q: want a name without spaces (or none: generated)", c.NodeID)
	}
	if token, user, password, err := c.Credentials(); err != nil {
		problems = append(problems, err)
	} else {
		if token != "" && user != "" {
			bad("token and user are exclusive: use one way to authenticate")
		}
		if (c.Password != "" || c.PasswordFile != "") && user == "" {
			bad("password without user")
		}
		if user != "" && password == "" {
			bad("user without password (password, password_file or %s)", EnvPassword)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls_cert and tls_key go together")
	}
	if c.TLSVerify && c.TLSCA == "" {
		bad("tls_verify needs tls_ca")
	}
	if c.TLSVerify && c.TLSCert == "" {
		bad("tls_verify needs tls_cert and tls_key")
	}
	if c.MaxKeyLen < 1 {
		bad("max_key_len %d: want at least 1", c.MaxKeyLen)
	}
	if c.MaxBatch < 1 || c.MaxBatch > maxMaxBatch {
		bad("max_batch %d: want 1 to %d", c.MaxBatch, maxMaxBatch)
	}
	if c.MaxPayload < 1024 || c.MaxPayload > maxMaxPayload {
		bad("max_payload %d: want 1024 to %d bytes", c.MaxPayload, maxMaxPayload)
	}
	if c.Handlers < 0 || c.Handlers > 1024 {
		bad("handlers %d: want 0 (automatic) to 1024", c.Handlers)
	}
	if c.Shards < 0 || c.Shards > 1<<16 {
		bad("shards %d: want 0 (automatic) to 65536", c.Shards)
	}
	if c.MaxKeys < MaxKeysAuto {
		bad("max_keys %d: want -1 (derived from memory), 0 (no bound) or more", c.MaxKeys)
	}
	if c.OverloadWait < 0 {
		bad("overload_wait %v is negative", c.OverloadWait)
	}
	if c.DrainTimeout <= 0 {
		bad("drain_timeout %v: want more than 0", c.DrainTimeout)
	}
	if len(c.Limiters) == 0 {
		bad("no limiters")
	}
	for name, lc := range c.Limiters {
		if !limiterName.MatchString(name) {
			bad("limiter name %q: want 1 to 64 of A-Z a-z 0-9 _ . - starting with a letter or digit", name)
		}
		if _, err := lc.FluxLimit(); err != nil {
			// Wrapped, so errors.Is finds the library's sentinel too.
			problems = append(problems, fmt.Errorf("%w: limiter %q: %w", ErrInvalidConfig, name, err))
		}
	}
	if c.OTLPEndpoint != "" {
		if u, err := url.Parse(c.OTLPEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("otlp_endpoint (--otlp-endpoint) %q: want an http:// or https:// URL such as http://127.0.0.1:4318", c.OTLPEndpoint)
		}
	}
	if math.IsNaN(c.TraceSample) || c.TraceSample < 0 || c.TraceSample > 1 {
		bad("trace_sample (--trace-sample): %v is not in [0, 1] (0 means the default, %v)", c.TraceSample, DefaultTraceSample)
	}
	for _, p := range validateReplyPrefixes(c.ReplyPrefixes) {
		bad("%s", p)
	}
	problems = append(problems, c.validateClientUsers()...)
	problems = append(problems, c.validateCluster()...)
	problems = append(problems, c.validateStore()...)
	return errors.Join(problems...)
}

// splitHostPort parses host:port; anyPort allows -1 (NATS's "random").
func splitHostPort(hp string, anyPort bool) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(ps)
	if err != nil {
		return "", 0, fmt.Errorf("port %q is not a number", ps)
	}
	low := 0
	if anyPort {
		low = -1
	}
	if p < low || p > 65535 {
		return "", 0, fmt.Errorf("port %d out of range", p)
	}
	return host, p, nil
}
