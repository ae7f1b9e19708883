package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/internal/errs"
)

func TestDefaultConfig(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.NATSListen != "127.0.0.1:4222" || cfg.HTTPListen != "127.0.0.1:9464" || cfg.MaxBatch < 1000 || cfg.MaxPayload < 1<<20 {
		t.Fatalf("defaults = %+v", cfg)
	}
	if l := cfg.Limiters[DefaultLimiterName]; l != DefaultLimiter || len(cfg.Limiters) != 1 {
		t.Fatalf("default limiters = %v", cfg.Limiters)
	}
	t.Setenv("XDG_DATA_HOME", "/data")
	if got := DefaultDataDir(); got != "/data/flux-node" {
		t.Fatalf("DefaultDataDir() = %q", got)
	}
}

func TestParseConfigMinimal(t *testing.T) {
	cfg, err := ParseConfig([]byte("limiters:\n  api:\n    rate: 100     # per second\n    burst: 20\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := LimiterConfig{Rate: 100, Burst: 20}
	if len(cfg.Limiters) != 1 || cfg.Limiters["api"] != want {
		t.Fatalf("limiters = %v, want only api %+v", cfg.Limiters, want)
	}
	if cfg.NATSListen != DefaultNATSListen || cfg.MaxBatch != DefaultMaxBatch {
		t.Fatalf("unset settings lost their defaults: %+v", cfg)
	}
	lim, err := cfg.Limiters["api"].FluxLimit()
	if err != nil || lim != (flux.Limit{Rate: 100, Burst: 20}) || lim.Capacity() != 21 {
		t.Fatalf("FluxLimit = %+v, %v", lim, err)
	}
}

func TestParseConfigFull(t *testing.T) {
	yaml := `
nats_listen: 127.0.0.1:4333
http_listen: 127.0.0.1:0
data_dir: /tmp/x
node_id: n1
log_level: debug
max_key_len: 64
max_batch: 2000
max_payload: 2097152
handlers: 3
overload_wait: 100ms
drain_timeout: 2s
limiters:
  api: {algorithm: gcra, rate: 0.5, burst: 1.5}
`
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATSListen != "127.0.0.1:4333" || cfg.NodeID != "n1" || cfg.MaxKeyLen != 64 || cfg.MaxBatch != 2000 ||
		cfg.MaxPayload != 2<<20 || cfg.Handlers != 3 || time.Duration(cfg.OverloadWait) != 100*time.Millisecond ||
		time.Duration(cfg.DrainTimeout) != 2*time.Second || cfg.LogLevel != "debug" {
		t.Fatalf("parsed %+v", cfg)
	}
	// Empty file: all defaults.
	cfg, err = ParseConfig(nil)
	if err != nil || cfg.Limiters[DefaultLimiterName] != DefaultLimiter {
		t.Fatalf("empty config: %+v, %v", cfg, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"limitrs: {}\n", `unknown top-level setting "limitrs" (did you mean limiters?)`},
		{"limiters:\n  api: {rate: 0}\n", "invalid rate"},
		{"limiters:\n  api: {rate: 1, burst: -1}\n", "invalid burst"},
		{"limiters:\n  api: {algorithm: magic, rate: 1}\n", "invalid algorithm"},
		{"limiters:\n  api: {rate: 1, limit: 5, window: 1m}\n", "gcra takes Rate and Burst"},
		{"limiters:\n  'bad name': {rate: 1}\n", "limiter name"},
		{"limiters: {}\n", "no limiters"},
		{"drain_timeout: soon\n", "invalid duration"},
		{"max_batch: 0\n", "max_batch"},
		{"max_payload: 10\n", "max_payload"},
		{"nats_listen: nowhere\n", "nats_listen"},
		{"token: t\nuser: u\npassword: p\n", "exclusive"},
		{"user: u\n", "user without password"},
		{"tls_cert: c\n", "tls_cert and tls_key"},
		{"tls_verify: true\n", "tls_verify needs tls_ca"},
		{"- not a map\n", "cannot unmarshal"},
		{"node_id: two words\n", "node_id"},
	} {
		_, err := ParseConfig([]byte(tt.yaml))
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseConfig(%q) = %v, want ErrInvalidConfig mentioning %q", tt.yaml, err, tt.want)
		}
	}
	if _, err := (LimiterConfig{Algorithm: "magic"}).FluxLimit(); !errors.Is(err, errs.InvalidAlgorithm) {
		t.Errorf("unknown algorithm: %v", err)
	}
	if _, err := (LimiterConfig{Rate: 0}).FluxLimit(); !errors.Is(err, errs.InvalidRate) {
		t.Errorf("rate 0: %v, want ErrInvalidRate", err)
	}
}

func TestLoadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "flux.yaml")
	if err := os.WriteFile(p, []byte("limiters:\n  api: {rate: 3}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(p)
	if err != nil || cfg.Limiters["api"].Rate != 3 {
		t.Fatalf("LoadConfig = %+v, %v", cfg, err)
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestConfigTracing(t *testing.T) {
	cfg, err := ParseConfig([]byte("otlp_endpoint: http://127.0.0.1:4318\ntrace_sample: 0.25\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OTLPEndpoint != "http://127.0.0.1:4318" || cfg.TraceSample != 0.25 {
		t.Fatalf("tracing config %+v", cfg.TraceConfig)
	}
	for _, doc := range []string{
		"trace_sample: 2\n",
		"trace_sample: -1\n",
		"otlp_endpoint: 127.0.0.1:4318\n",
		"otlp_endpoint: grpc://127.0.0.1:4317\n",
	} {
		if _, err := ParseConfig([]byte(doc)); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%q: %v, want ErrInvalidConfig", doc, err)
		}
	}
}
