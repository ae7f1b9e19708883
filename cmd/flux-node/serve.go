package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fluxlimiter/flux/node"
)

// override applies one command-line flag to a config. Flags are kept as
// overrides so they win over the config file at start and on every reload.
type override func(*node.Config) error

// serveFlags defines the flags of the node and returns where the config
// file path and the overrides land.
func serveFlags(fs *flag.FlagSet) (*string, *[]override) {
	d := node.DefaultConfig()
	var ovs []override
	str := func(name, usage string, set func(*node.Config, string)) {
		fs.Func(name, usage, func(v string) error {
			ovs = append(ovs, func(c *node.Config) error { set(c, v); return nil })
			return nil
		})
	}
	num := func(name, usage string, set func(*node.Config, int)) {
		fs.Func(name, usage, func(v string) error {
			i, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("not a whole number: %q", v)
			}
			ovs = append(ovs, func(c *node.Config) error { set(c, i); return nil })
			return nil
		})
	}
	config := fs.String("config", "", "YAML config `FILE` (limiters and any setting below)")
	str("nats-listen", "`HOST:PORT` of the embedded NATS server; port -1 picks a free one (default "+d.NATSListen+")",
		func(c *node.Config, v string) { c.NATSListen = v })
	str("nats-url", "use the NATS at `URL` (comma-separated for several) instead of embedding a server",
		func(c *node.Config, v string) { c.NATSURL = v })
	str("http-listen", "`HOST:PORT` of /healthz, /readyz and /metrics; port 0 picks a free one, \"\" turns them off (default "+d.HTTPListen+")",
		func(c *node.Config, v string) { c.HTTPListen = v })
	str("data-dir", "`DIR` where the embedded server keeps JetStream data (default "+d.DataDir+")",
		func(c *node.Config, v string) { c.DataDir = v })
	str("node-id", "`ID` of this node in logs, service metadata and its cluster (default: HOST-RANDOM, generated once and kept in --data-dir)",
		func(c *node.Config, v string) { c.NodeID = v })
	str("cluster-name", "`NAME` of the cluster: nodes coordinate with nodes of the same name (default "+node.DefaultClusterName+")",
		func(c *node.Config, v string) { c.ClusterName = v })
	str("cluster-listen", "`HOST:PORT` where the embedded NATS server takes routes from the other nodes (port -1 picks a free one)",
		func(c *node.Config, v string) { c.ClusterListen = v })
	str("routes", "route `URL`s of the cluster's servers, comma-separated: nats-route://HOST:PORT,... (the same full list may be given to every node)",
		func(c *node.Config, v string) { c.Routes = node.ParseRoutes(v) })
	str("cluster-secret-file", "`FILE` holding the cluster secret, the same on every node, at least 32 bytes (default: the environment variable "+node.EnvClusterSecret+"); required in a cluster",
		func(c *node.Config, v string) { c.ClusterSecretFile = v })
	str("cluster-tls-cert", "PEM certificate `FILE` the embedded server presents on its routes (with --cluster-tls-key and --cluster-tls-ca: routes then use TLS)",
		func(c *node.Config, v string) { c.ClusterTLSCert = v })
	str("cluster-tls-key", "PEM key `FILE` of --cluster-tls-cert", func(c *node.Config, v string) { c.ClusterTLSKey = v })
	str("cluster-tls-ca", "PEM CA `FILE` the route peers' certificates must be signed by", func(c *node.Config, v string) { c.ClusterTLSCA = v })
	str("log-level", "`LEVEL`: debug, info, warn or error (default info)",
		func(c *node.Config, v string) { c.LogLevel = v })
	str("log-format", "`FORMAT` of the log: text (key=value lines, the default) or json (one object a line)",
		func(c *node.Config, v string) { c.LogFormat = v })
	str("token", "NATS authorization `TOKEN` required by the embedded server and used by the node's connection",
		func(c *node.Config, v string) { c.Token = v })
	str("user", "NATS `USER` (with --password)", func(c *node.Config, v string) { c.User = v })
	str("password", "NATS `PASSWORD` (with --user); prefer --password-file or "+node.EnvPassword+": flags show in the process list", func(c *node.Config, v string) { c.Password = v })
	str("token-file", "`FILE` holding the NATS token (default: the environment variable "+node.EnvToken+" when no --token or --user is given)",
		func(c *node.Config, v string) { c.TokenFile = v })
	str("password-file", "`FILE` holding the password of --user (default: the environment variable "+node.EnvPassword+")",
		func(c *node.Config, v string) { c.PasswordFile = v })
	str("tls-cert", "PEM certificate `FILE` of the embedded server (the client certificate with --nats-url)",
		func(c *node.Config, v string) { c.TLSCert = v })
	str("tls-key", "PEM key `FILE` of --tls-cert", func(c *node.Config, v string) { c.TLSKey = v })
	str("tls-ca", "PEM CA `FILE` the node's connection verifies the server with",
		func(c *node.Config, v string) { c.TLSCA = v })
	fs.BoolFunc("tls-verify", "make the embedded server require client certificates signed by --tls-ca", func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return err
		}
		ovs = append(ovs, func(c *node.Config) error { c.TLSVerify = b; return nil })
		return nil
	})
	num("max-key-len", fmt.Sprintf("longest key accepted, in `BYTES` (default %d)", d.MaxKeyLen),
		func(c *node.Config, v int) { c.MaxKeyLen = v })
	num("max-keys", "most `KEYS` each limiter holds (max_keys); beyond them requests for new keys get 503 overloaded; 0: no bound; -1: derived from the memory available (default), see docs/OPERATIONS.md", func(c *node.Config, v int) { c.MaxKeys = v })
	num("max-batch", fmt.Sprintf("most `ITEMS` in a check_batch request (default %d)", d.MaxBatch),
		func(c *node.Config, v int) { c.MaxBatch = v })
	num("max-payload", fmt.Sprintf("largest request body, in `BYTES` (default %d)", d.MaxPayload),
		func(c *node.Config, v int) { c.MaxPayload = v })
	num("handlers", "`N` workers per endpoint answering requests in parallel (default 2×GOMAXPROCS, at least 4)",
		func(c *node.Config, v int) { c.Handlers = v })
	str("reply-prefixes", "reply subject `PREFIXES` the node answers, comma-separated (default _INBOX.); never its internal, store or service subjects",
		func(c *node.Config, v string) { c.ReplyPrefixes = node.ParseRoutes(v) })
	num("shards", "`N` shard goroutines per limiter (default half of GOMAXPROCS, at least 1)", func(c *node.Config, v int) { c.Shards = v })
	fs.Func("heartbeat", "`DURATION` between cluster heartbeats; a node missing three is dropped (default 1s)", func(v string) error {
		dur, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		ovs = append(ovs, func(c *node.Config) error { c.Heartbeat = node.Duration(dur); return nil })
		return nil
	})
	fs.Func("drain-timeout", "`DURATION` bound on the graceful drain at shutdown (default "+time.Duration(d.DrainTimeout).String()+")", func(v string) error {
		dur, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		ovs = append(ovs, func(c *node.Config) error { c.DrainTimeout = node.Duration(dur); return nil })
		return nil
	})
	storeFlags(fs, str, &ovs)
	str("otlp-endpoint", "send traces to the OTLP/HTTP collector at `URL`, such as http://127.0.0.1:4318 (default: OTEL_EXPORTER_OTLP_ENDPOINT if set, else no tracing)",
		func(c *node.Config, v string) { c.OTLPEndpoint = v })
	fs.Func("trace-sample", fmt.Sprintf("`RATIO` (0 to 1) of requests traced when the sender did not sample them (default %v)", node.DefaultTraceSample), func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("not a number: %q", v)
		}
		ovs = append(ovs, func(c *node.Config) error {
			if !(f >= 0 && f <= 1) {
				return fmt.Errorf("%w: --trace-sample: %v is not in [0, 1]", node.ErrInvalidConfig, v)
			}
			c.TraceSample = f
			return nil
		})
		return nil
	})
	return config, &ovs
}

// loadConfig reads the config file (or the defaults), applies the flags,
// and validates the result: the file alone may be incomplete (its
// limiters' store settings need the store given by --store).
func loadConfig(path string, ovs []override) (node.Config, error) {
	cfg := node.DefaultConfig()
	if path != "" {
		var err error
		if cfg, err = node.ReadConfig(path); err != nil {
			return node.Config{}, err
		}
	}
	for _, o := range ovs {
		if err := o(&cfg); err != nil {
			return node.Config{}, err
		}
	}
	if _, err := parseLevel(cfg.LogLevel); err != nil {
		return node.Config{}, err
	}
	if _, err := logHandler(io.Discard, cfg.LogFormat, nil); err != nil {
		return node.Config{}, err
	}
	return cfg, cfg.Validate()
}

// logHandler returns the slog handler of format ("" is text) writing to w.
func logHandler(w io.Writer, format string, opts *slog.HandlerOptions) (slog.Handler, error) {
	switch format {
	case "", "text":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("%w: log_format (--log-format) %q: want text or json", node.ErrInvalidConfig, format)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%w: log_level (--log-level) %q: want debug, info, warn or error", node.ErrInvalidConfig, s)
	}
	return l, nil
}

// serve runs a node until ctx ends, reloading its config on SIGHUP.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("flux-node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// The flag package prints a bad flag's error, then calls Usage: the
	// full usage is printed only when asked for.
	fs.Usage = func() {}
	path, ovs := serveFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and VCS revision, and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage:\n  flux-node [flags]                          run a node\n  flux-node check [flags] LIMITER KEY [COST]  ask a node (flux-node check -h)\n  flux-node version                          print the version\n\nFlags:\n")
			fs.PrintDefaults()
			return nil
		}
		return badFlag(stderr, "flux-node")
	}
	if *showVersion {
		fmt.Fprintln(stdout, version())
		return nil
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "flux-node: unexpected argument %q (did you mean `flux-node check`?)\n", fs.Arg(0))
		return exitCode(2)
	}
	cfg, err := loadConfig(*path, *ovs)
	if err != nil {
		return err
	}
	node.TuneGC()
	var level slog.LevelVar
	lv, _ := parseLevel(cfg.LogLevel)
	level.Set(lv)
	h, _ := logHandler(stderr, cfg.LogFormat, &slog.HandlerOptions{Level: &level}) // checked by loadConfig
	log := slog.New(h)
	routeRedisLogs(log)

	// Listen for SIGHUP before starting, so an early one is not lost (nor
	// kills the process).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	tr, err := newTracer(ctx, cfg)
	if err != nil {
		return err
	}
	// Runs last: the node's final spans are exported after it stopped.
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tr.shutdown(sctx); err != nil {
			log.Warn("exporting the last traces failed", "error", err)
		}
	}()
	if tr.tp != nil {
		log.Info("tracing", "otlp_endpoint", cmp.Or(cfg.OTLPEndpoint, "from OTEL_EXPORTER_OTLP_*"), "sample", cmp.Or(cfg.TraceSample, node.DefaultTraceSample))
	}

	log.Info("flux-node starting", "version", version())
	n, err := node.New(cfg, log, tr.options()...)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = n.Start(sctx)
	cancel()
	if err != nil {
		// The error first: what the node logs while stopping is its
		// consequence, not its cause.
		log.Error("flux-node could not start", "error", err)
		n.Shutdown(context.Background())
		return loggedError{err}
	}
	log.Info("try a check", "command", hint(cfg, n.ClientURL()))
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down: draining requests in flight")
			sctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.DrainTimeout)+5*time.Second)
			defer cancel()
			return n.Shutdown(sctx)
		case <-hup:
			if *path == "" {
				log.Warn("SIGHUP: no --config file to reload")
				continue
			}
			next, err := loadConfig(*path, *ovs)
			if err == nil {
				err = n.Reload(next)
			}
			if err == nil && next.TraceConfig != cfg.TraceConfig {
				log.Warn("SIGHUP: otlp_endpoint and trace_sample take effect at the next start")
			}
			if err != nil {
				// One line: a file's several problems are joined by newlines,
				// which a log line would show escaped.
				log.Error("SIGHUP: reload refused, the running config stays", "config", *path, "error", strings.ReplaceAll(err.Error(), "\n", "; "))
				continue
			}
			if l, err := parseLevel(next.LogLevel); err == nil {
				level.Set(l)
			}
			cfg.LogLevel = next.LogLevel
		}
	}
}

// hint is the one command line that tries a check against this node.
func hint(cfg node.Config, url string) string {
	prog := "flux-node"
	if strings.Contains(os.Args[0], "go-build") {
		prog = "go run ./cmd/flux-node"
	}
	parts := []string{prog, "check"}
	if url != defaultURL {
		parts = append(parts, "--nats-url", url)
	}
	switch {
	case cfg.Token != "" || cfg.TokenFile != "" || (cfg.User == "" && os.Getenv(node.EnvToken) != ""):
		parts = append(parts, "--token", "TOKEN")
	case cfg.User != "":
		parts = append(parts, "--user", cfg.User, "--password", "PASSWORD")
	}
	if cfg.TLSCA != "" {
		parts = append(parts, "--tls-ca", cfg.TLSCA)
	}
	name := node.DefaultLimiterName
	if _, ok := cfg.Limiters[name]; !ok {
		name = slices.Sorted(maps.Keys(cfg.Limiters))[0]
	}
	return strings.Join(append(parts, name, "alice"), " ")
}
