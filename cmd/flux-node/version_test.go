package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/fluxlimiter/flux/node"
)

func TestVersion(t *testing.T) {
	want := version()
	if !strings.HasPrefix(want, "flux-node ") {
		t.Fatalf("version() = %q", want)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out, errOut bytes.Buffer
		if err := run(t.Context(), args, &out, &errOut); err != nil {
			t.Fatalf("run(%q): %v (stderr %q)", args, err, errOut.String())
		}
		if got := strings.TrimSpace(out.String()); got != want {
			t.Errorf("run(%q) printed %q, want %q", args, got, want)
		}
	}
	bi := &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Path: "github.com/fluxlimiter/flux", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-12-05T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	if got, w := versionOf(bi, true), "flux-node v1.2.3 revision abc123+modified 2026-12-05T10:00:00Z go1.99"; got != w {
		t.Errorf("versionOf = %q, want %q", got, w)
	}
	if got := versionOf(nil, false); !strings.Contains(got, "unknown version") {
		t.Errorf("versionOf(nil) = %q", got)
	}
	buildVersion = "v2.0.0"
	defer func() { buildVersion = "" }()
	if got := versionOf(bi, true); !strings.HasPrefix(got, "flux-node v2.0.0 revision abc123") {
		t.Errorf("with -X main.buildVersion: versionOf = %q", got)
	}
}

// TestBadFlagHint: a bad flag prints its error and one hint, not the usage.
func TestBadFlagHint(t *testing.T) {
	for _, tt := range []struct {
		args []string
		hint string
	}{
		{[]string{"--no-such-flag"}, "run flux-node --help for usage"},
		{[]string{"check", "--no-such-flag"}, "run flux-node check --help for usage"},
	} {
		var errOut bytes.Buffer
		code := exitStatus(run(t.Context(), tt.args, io.Discard, &errOut), &errOut)
		lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
		if code != 2 || len(lines) != 2 || !strings.Contains(lines[0], "no-such-flag") || lines[1] != tt.hint {
			t.Errorf("run(%q): exit %d, stderr %q: want the error and %q", tt.args, code, errOut.String(), tt.hint)
		}
	}
	var errOut bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, io.Discard, &errOut); err != nil || !strings.Contains(errOut.String(), "-store-prefix") {
		t.Errorf("--help: %v, usage %q", err, errOut.String())
	}
}

func TestTraceSampleOutOfRange(t *testing.T) {
	var errOut bytes.Buffer
	err := run(t.Context(), []string{"--trace-sample", "2"}, io.Discard, &errOut)
	if !errors.Is(err, node.ErrInvalidConfig) {
		t.Fatalf("err = %v", err)
	}
	exitStatus(err, &errOut)
	if !strings.Contains(errOut.String(), "--trace-sample: 2 is not in [0, 1]") {
		t.Errorf("stderr %q", errOut.String())
	}
}

// TestStartFailureLogsErrorFirst: a node that cannot start logs why before
// it logs that it stopped, and the error is not printed twice.
func TestStartFailureLogsErrorFirst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var errOut bytes.Buffer
	err = run(t.Context(), []string{"--nats-listen", ln.Addr().String(), "--http-listen", "", "--data-dir", t.TempDir()}, io.Discard, &errOut)
	var le *node.ListenError
	if !errors.As(err, &le) {
		t.Fatalf("err = %v, want a ListenError", err)
	}
	if code := exitStatus(err, &errOut); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	out := errOut.String()
	cause, stopped := strings.Index(out, "could not start"), strings.Index(out, "flux-node stopped")
	if cause < 0 || (stopped >= 0 && stopped < cause) {
		t.Errorf("want the start error logged before \"flux-node stopped\":\n%s", out)
	}
	if strings.Count(out, "--nats-listen") != 1 {
		t.Errorf("the error is shown %d times, want once:\n%s", strings.Count(out, "--nats-listen"), out)
	}
}
