// Package nodeexample_test runs the Node.js client example (check.mjs and
// its `node --test` suite) against a flux-node started in-process.
package nodeexample_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fluxlimiter/flux/node"
	"github.com/fluxlimiter/flux/node/nodetest"
)

// tools finds node and npm. Without them the test is skipped, unless
// CI=true, where it fails: CI must run the example.
func tools(t *testing.T) (nodeBin, npmBin string) {
	t.Helper()
	var missing []string
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node")
	}
	npmBin, err = exec.LookPath("npm")
	if err != nil {
		missing = append(missing, "npm")
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("%s not found in PATH: install Node.js 18 or later with npm (e.g. apt-get install nodejs npm) to run the Node.js example test", strings.Join(missing, " and "))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (required because CI=true)")
		}
		t.Skip(msg + "; it runs whenever they are found, and CI=true makes it required")
	}
	return nodeBin, npmBin
}

// npmCI installs the example's pinned dependencies unless node_modules
// already exists.
func npmCI(t *testing.T, npmBin string) {
	t.Helper()
	if _, err := os.Stat("node_modules"); err == nil {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npmBin, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll("node_modules") // do not leave a half install behind
		t.Fatalf("npm ci failed (it needs the npm registry): %v\n%s", err, out)
	}
}

// startNode starts a flux-node on a random loopback port with the
// limiters of flux-node.yaml, the file the README starts the node with, so
// that the tests run against what a reader runs: "api", capacity 3,
// refilling one request per 100 s so nothing refills during the test.
func startNode(t *testing.T) string {
	t.Helper()
	file, err := node.LoadConfig("flux-node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return nodetest.Start(t, nodetest.Config(t, file.Limiters)).ClientURL()
}

// The README starts the node with flux-node.yaml and runs the tests with
// npm test: the way a reader runs them is the way CI does.
func TestReadmeRunsWhatTheTestRuns(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"go run ./cmd/flux-node --config examples/node/flux-node.yaml --nats-listen 127.0.0.1:14222",
		"FLUX_NATS_URL=nats://127.0.0.1:14222 npm test",
	} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("README.md lacks %q", want)
		}
	}
}

// run runs bin (node or npm) with args in this directory, pointed at the
// node at url.
func run(t *testing.T, bin, url string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "FLUX_NATS_URL="+url, "FLUX_LIMITER=api", "NO_COLOR=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func TestNodeExample(t *testing.T) {
	nodeBin, npmBin := tools(t)
	npmCI(t, npmBin)
	url := startNode(t)

	t.Run("npm test", func(t *testing.T) {
		out, err := run(t, npmBin, url, "test", "--silent", "--", "--test-reporter=tap")
		if err != nil {
			t.Fatalf("npm test: %v\n%s", err, out)
		}
		for _, want := range []string{"# pass 5", "# fail 0", "# skipped 0"} {
			if !strings.Contains(out, want) {
				t.Errorf("node --test output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("check.mjs", func(t *testing.T) {
		out, err := run(t, nodeBin, url, "check.mjs", "api", "dora")
		if err != nil {
			t.Fatalf("node check.mjs: %v\n%s", err, out)
		}
		for _, want := range []string{
			"check: dora: allowed (2 of 3 left)",
			"batch: dora: allowed (1 of 3 left)",
			"batch: bob: allowed (2 of 3 left)",
			"batch: carol: allowed (2 of 3 left)",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
}
