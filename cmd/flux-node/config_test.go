package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxlimiter/flux/node"
)

// A config file whose limiters set store_failure and store_mode: atomic is
// valid when the store comes from --store: the file is validated only once
// the flags are applied. Without a store the same file is refused.
func TestStoreFlagOverFileLimiterSettings(t *testing.T) {
	p := filepath.Join(t.TempDir(), "flux.yaml")
	yaml := "limiters:\n  login: {rate: 0.1, burst: 4, store_failure: closed}\n  shared: {rate: 50, burst: 49, store_mode: atomic}\n"
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(args ...string) (node.Config, error) {
		fs := flag.NewFlagSet("flux-node", flag.ContinueOnError)
		path, ovs := serveFlags(fs)
		if err := fs.Parse(append([]string{"--config", p}, args...)); err != nil {
			t.Fatal(err)
		}
		return loadConfig(*path, *ovs)
	}
	cfg, err := load("--store", "redis://127.0.0.1:6379/0", "--store-write", "through")
	if err != nil {
		t.Fatalf("file limiters with --store: %v", err)
	}
	if cfg.Store != "redis://127.0.0.1:6379/0" || cfg.StoreWrite != "through" ||
		cfg.Limiters["login"].StoreFailure != "closed" || cfg.Limiters["shared"].StoreMode != "atomic" {
		t.Fatalf("config %+v: want the file's limiters and the flags' store", cfg)
	}
	_, err = load()
	if !errors.Is(err, node.ErrInvalidConfig) || !strings.Contains(err.Error(), "store_failure needs a store (--store)") ||
		!strings.Contains(err.Error(), "store_mode atomic needs a store") {
		t.Fatalf("file limiters without a store: %v; want both refused", err)
	}
}

// --max-keys sets max_keys over the file's value (-1: derived from
// memory); below -1 is refused as the YAML key's is.
func TestMaxKeysFlag(t *testing.T) {
	p := filepath.Join(t.TempDir(), "flux.yaml")
	if err := os.WriteFile(p, []byte("max_keys: 10\nlimiters:\n  api: {rate: 10, burst: 5}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(args ...string) (node.Config, error) {
		fs := flag.NewFlagSet("flux-node", flag.ContinueOnError)
		path, ovs := serveFlags(fs)
		if err := fs.Parse(append([]string{"--config", p}, args...)); err != nil {
			t.Fatal(err)
		}
		return loadConfig(*path, *ovs)
	}
	cfg, err := load()
	if err != nil || cfg.MaxKeys != 10 {
		t.Fatalf("file only: max_keys %d, err %v; want 10", cfg.MaxKeys, err)
	}
	cfg, err = load("--max-keys", "250000")
	if err != nil || cfg.MaxKeys != 250000 {
		t.Fatalf("--max-keys 250000: max_keys %d, err %v", cfg.MaxKeys, err)
	}
	cfg, err = load("--max-keys", "0")
	if err != nil || cfg.MaxKeys != 0 {
		t.Fatalf("--max-keys 0: max_keys %d, err %v; want 0 (no bound)", cfg.MaxKeys, err)
	}
	cfg, err = load("--max-keys", "-1")
	if err != nil || cfg.MaxKeys != node.MaxKeysAuto {
		t.Fatalf("--max-keys -1: max_keys %d, err %v; want MaxKeysAuto", cfg.MaxKeys, err)
	}
	if _, err := load("--max-keys", "-2"); !errors.Is(err, node.ErrInvalidConfig) || !strings.Contains(err.Error(), "max_keys -2") {
		t.Fatalf("--max-keys -2: %v; want ErrInvalidConfig naming max_keys", err)
	}
}
