package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/node"
)

func TestClusterFlags(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "flux.yaml")
	yaml := "cluster_name: west\nlimiters:\n  api: {rate: 10, burst: 5, mode: strict, on_owner_failure: open}\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("flux-node", flag.ContinueOnError)
	path, ovs := serveFlags(fs)
	err := fs.Parse([]string{"--config", cfgPath, "--node-id", "a",
		"--cluster-name", "east", "--cluster-listen", "127.0.0.1:6222",
		"--routes", "nats-route://127.0.0.1:6222, nats-route://127.0.0.1:6223", "--heartbeat", "300ms"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(*path, *ovs)
	if err != nil {
		t.Fatal(err)
	}
	want := node.ClusterConfig{ClusterName: "east", ClusterListen: "127.0.0.1:6222",
		Routes: node.Routes{"nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6223"}, Heartbeat: node.Duration(300 * time.Millisecond)}
	if got := cfg.ClusterConfig; got.ClusterName != want.ClusterName || got.ClusterListen != want.ClusterListen ||
		strings.Join(got.Routes, " ") != strings.Join(want.Routes, " ") || got.Heartbeat != want.Heartbeat {
		t.Fatalf("cluster settings %+v, want %+v (flags over the file)", got, want)
	}
	if lc := cfg.Limiters["api"]; lc.Mode != "strict" || lc.OnOwnerFailure != "open" {
		t.Fatalf("api from the file: %+v", lc)
	}
}

func TestClusterListenInUseNamesFlag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var errOut bytes.Buffer
	err = run(t.Context(), []string{"--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--cluster-listen", ln.Addr().String()}, io.Discard, &errOut)
	var le *node.ListenError
	if !errors.As(err, &le) || le.Flag != "--cluster-listen" {
		t.Fatalf("route port busy: err = %v, want a ListenError naming --cluster-listen", err)
	}
}
