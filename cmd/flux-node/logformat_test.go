package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/fluxlimiter/flux/node"
)

// TestLogFormatJSON: with --log-format json every line the node logs is
// one JSON object, so a log pipeline can read it; an unknown format is a
// configuration error that names the flag.
func TestLogFormatJSON(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A node that cannot listen starts, logs and stops: enough lines to
	// check their format without serving anything.
	var errOut bytes.Buffer
	err = run(t.Context(), []string{"--log-format", "json", "--nats-listen", ln.Addr().String(), "--http-listen", "", "--data-dir", t.TempDir()}, io.Discard, &errOut)
	var le *node.ListenError
	if !errors.As(err, &le) {
		t.Fatalf("err = %v, want a ListenError", err)
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if len(lines) < 2 {
		t.Fatalf("want the start and the failure logged, got:\n%s", errOut.String())
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		if rec["level"] == nil || rec["msg"] == nil || rec["time"] == nil {
			t.Errorf("line %q lacks time, level or msg", l)
		}
	}

	errOut.Reset()
	err = run(t.Context(), []string{"--log-format", "xml"}, io.Discard, &errOut)
	if !errors.Is(err, node.ErrInvalidConfig) {
		t.Fatalf("--log-format xml: err = %v, want ErrInvalidConfig", err)
	}
	exitStatus(err, &errOut)
	if !strings.Contains(errOut.String(), `--log-format`) || !strings.Contains(errOut.String(), "want text or json") {
		t.Errorf("stderr %q does not name the flag and its values", errOut.String())
	}
}
