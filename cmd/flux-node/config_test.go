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
