package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/node"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// logLines collects what a node writes to stderr, line by line, and
// finds values in it. Safe for simultaneous use.
type logLines struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	cond chan struct{}
}

func newLogLines() *logLines { return &logLines{cond: make(chan struct{}, 1)} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	select {
	case l.cond <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// find waits until re matches the log and returns its first group.
func (l *logLines) find(t *testing.T, re string, d time.Duration) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(d)
	for {
		if m := rx.FindStringSubmatch(l.String()); m != nil {
			return m[1]
		}
		select {
		case <-l.cond:
		case <-deadline:
			t.Fatalf("no %q in the log within %v:\n%s", re, d, l.String())
		}
	}
}

func writeConfig(t *testing.T, path, yaml string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startRun runs the program in-process until the test ends.
func startRun(t *testing.T, args ...string) (*logLines, func() error) {
	t.Helper()
	logs := newLogLines()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, io.Discard, logs) }()
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(10 * time.Second):
				t.Error("run did not return within 10s of cancellation")
			}
		})
		return result
	}
	t.Cleanup(func() { stop() })
	return logs, stop
}

func TestServeAndCheck(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "flux.yaml")
	writeConfig(t, cfgPath, "limiters:\n  api: {rate: 100, burst: 20}\n  one: {rate: 0.001, burst: 0}\n")
	logs, stop := startRun(t, "--config", cfgPath, "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0", "--data-dir", dir)
	url := logs.find(t, `client_url=(\S+)`, 30*time.Second)
	hintLine := logs.find(t, `msg="try a check" command="([^"]+)"`, 5*time.Second)
	if !strings.Contains(hintLine, "check --nats-url "+url+" api alice") {
		t.Errorf("hint %q does not show how to check against %s", hintLine, url)
	}

	check := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		err := run(t.Context(), append([]string{"check", "--nats-url", url}, args...), &out, &errOut)
		return exitStatus(err, &errOut), out.String(), errOut.String()
	}
	if code, out, errOut := check("api", "alice"); code != 0 || !strings.HasPrefix(out, `allowed: api "alice": 20 of 21 remaining`) {
		t.Fatalf("check api alice = %d %q %q", code, out, errOut)
	}
	if code, out, _ := check("api", "alice", "0"); code != 0 || !strings.Contains(out, "of 21 remaining") {
		t.Fatalf("peek = %d %q", code, out)
	}
	if code, _, _ := check("one", "bob"); code != 0 {
		t.Fatalf("first check of one = %d", code)
	}
	if code, out, _ := check("one", "bob"); code != 1 || !strings.HasPrefix(out, `denied: one "bob": 0 of 1 remaining, retry after`) {
		t.Fatalf("second check of one = %d %q, want 1 and denied", code, out)
	}
	if code, _, errOut := check("nope", "bob"); code != 2 || !strings.Contains(errOut, "unknown limiter") {
		t.Fatalf("unknown limiter = %d %q, want 2", code, errOut)
	}
	if code, _, errOut := check("api", "bob", "99"); code != 2 || !strings.Contains(errOut, "cost_exceeds_capacity") {
		t.Fatalf("cost 99 = %d %q, want 2", code, errOut)
	}
	if code, _, _ := check("api"); code != 2 {
		t.Fatalf("missing KEY = %d, want 2", code)
	}
	if code, _, _ := check("api", "bob", "x"); code != 2 {
		t.Fatalf("bad COST = %d, want 2", code)
	}

	// The Go client against the same node.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	d, err := client.New(nc).Check(t.Context(), "api", "carol", 3)
	if err != nil || !d.Allowed || d.Remaining != 18 {
		t.Fatalf("client check = %+v, %v", d, err)
	}

	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("run returned %v after cancellation, want nil", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("stopping took %v", el)
	}
	if !strings.Contains(logs.String(), "flux-node stopped") {
		t.Fatal("no stop in the log")
	}
}

func TestCheckWithoutNode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var out, errOut bytes.Buffer
	err = run(t.Context(), []string{"check", "--nats-url", "nats://" + addr, "--timeout", "500ms", "default", "alice"}, &out, &errOut)
	if code := exitStatus(err, &errOut); code != 2 || !strings.Contains(errOut.String(), "--nats-url") {
		t.Fatalf("no node: exit %d, stderr %q; want 2 and a hint naming --nats-url", code, errOut.String())
	}
}

func TestPortInUseNamesFlag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	for _, tt := range []struct {
		flag string
		args []string
	}{
		{"--nats-listen", []string{"--nats-listen", busy, "--http-listen", "127.0.0.1:0"}},
		{"--http-listen", []string{"--nats-listen", "127.0.0.1:-1", "--http-listen", busy}},
	} {
		var errOut bytes.Buffer
		start := time.Now()
		err := run(t.Context(), append(tt.args, "--data-dir", t.TempDir()), io.Discard, &errOut)
		var le *node.ListenError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("%s busy: err = %v, want a ListenError naming the flag", tt.flag, err)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("%s busy: took %v to fail, want at once", tt.flag, el)
		}
		if code := exitStatus(err, &errOut); code != 1 || !strings.Contains(errOut.String(), tt.flag) {
			t.Errorf("%s busy: exit %d, stderr %q", tt.flag, code, errOut.String())
		}
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"serve"},
		{"--max-batch", "many"},
	} {
		var errOut bytes.Buffer
		if code := exitStatus(run(t.Context(), args, io.Discard, &errOut), &errOut); code != 2 {
			t.Errorf("run(%q) exit %d, want 2 (stderr %q)", args, code, errOut.String())
		}
	}
	var errOut bytes.Buffer
	err := run(t.Context(), []string{"--config", filepath.Join(t.TempDir(), "none.yaml")}, io.Discard, &errOut)
	if !errors.Is(err, node.ErrInvalidConfig) || exitStatus(err, &errOut) != 1 {
		t.Errorf("missing config: %v", err)
	}
	err = run(t.Context(), []string{"--log-level", "loud"}, io.Discard, &errOut)
	if !errors.Is(err, node.ErrInvalidConfig) {
		t.Errorf("bad log level: %v", err)
	}
	if err := run(t.Context(), []string{"-h"}, io.Discard, &errOut); err != nil {
		t.Errorf("-h: %v", err)
	}
}

// TestBinary builds flux-node and drives the real process: start on
// random ports, check through the Go client and the check subcommand,
// reload a changed limit with SIGHUP, stop with SIGTERM.
func TestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "flux-node")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfgPath := filepath.Join(dir, "flux.yaml")
	writeConfig(t, cfgPath, "limiters:\n  api:\n    rate: 0.1\n    burst: 20\n")
	cmd := exec.Command(bin, "--config", cfgPath, "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "data"), "--node-id", "e2e")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := newLogLines()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(logs, sc.Text())
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-copied
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	})
	url := logs.find(t, `client_url=(\S+)`, 30*time.Second)
	httpAddr := logs.find(t, `http_addr=(\S+)`, 10*time.Second)
	logs.find(t, `(msg="try a check")`, 10*time.Second)

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc)
	d, err := c.Check(t.Context(), "api", "alice", 1)
	if err != nil || !d.Allowed || d.Limit != 21 || d.Remaining != 20 {
		t.Fatalf("client check = %+v, %v", d, err)
	}
	res, err := c.CheckBatch(t.Context(), []client.Request{{Limiter: "api", Key: "a", Cost: 1}, {Limiter: "nope", Key: "a", Cost: 1}, {Limiter: "api", Key: "", Cost: 1}})
	if err != nil || !res[0].Decision.Allowed || !errors.Is(res[1].Err, client.ErrUnknownLimiter) || res[2].Err == nil {
		t.Fatalf("client batch = %+v, %v", res, err)
	}

	checkCmd := func(args ...string) (int, string) {
		out, err := exec.Command(bin, append([]string{"check", "--nats-url", url}, args...)...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := checkCmd("api", "bob"); code != 0 || !strings.Contains(out, "allowed") {
		t.Fatalf("check subcommand = %d %q", code, out)
	}
	if code, out := checkCmd("api", "bob", "21"); code != 1 || !strings.Contains(out, "denied") {
		t.Fatalf("check of 21 after 1 = %d %q, want 1 denied", code, out)
	}
	if code, out := checkCmd("nope", "bob"); code != 2 {
		t.Fatalf("check of unknown limiter = %d %q, want 2", code, out)
	}

	// Reload a changed limit with SIGHUP; alice keeps what she used.
	writeConfig(t, cfgPath, "limiters:\n  api:\n    rate: 0.1\n    burst: 4\n  extra:\n    rate: 1\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ls, err := c.Limiters(t.Context())
		if err == nil && len(ls) == 2 && ls[0].Name == "api" && ls[0].Capacity == 5 && ls[1].Name == "extra" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("limiters after SIGHUP = %+v, %v\n%s", ls, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d, err := c.Check(t.Context(), "api", "zed", 0); err != nil || d.Limit != 5 {
		t.Fatalf("after reload: %+v, %v", d, err)
	}
	// An invalid file is refused and the running config stays.
	writeConfig(t, cfgPath, "limiters:\n  api: {rate: -5}\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logs.find(t, `(reload refused)`, 10*time.Second)
	// A typo, and a file with several problems: each refusal is one log
	// line naming the fix, without an escaped newline.
	writeConfig(t, cfgPath, "limiters:\n  api:\n    rate: 1\n    brust: 2\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logs.find(t, `reload refused.*(`+regexp.QuoteMeta(cfgPath)+`:4: unknown limiter setting \\"brust\\" \(did you mean burst\?\))`, 10*time.Second)
	writeConfig(t, cfgPath, "limiters:\n  a: {rate: -5}\n  b: {rate: -5}\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logs.find(t, `reload refused.*limiter \\"a\\".*(limiter \\"b\\")`, 10*time.Second)
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "reload refused") && strings.Contains(line, `\n`) {
			t.Errorf("a reload refusal with an escaped newline: %s", line)
		}
	}
	if d, err := c.Check(t.Context(), "api", "zed", 0); err != nil || d.Limit != 5 {
		t.Fatalf("after refused reload: %+v, %v", d, err)
	}

	if resp, err := httpGet("http://" + httpAddr + "/readyz"); err != nil || resp != 200 {
		t.Fatalf("/readyz = %d, %v", resp, err)
	}

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10s after SIGTERM\n%s", logs.String())
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("SIGTERM to exit took %v", el)
	}
	if !strings.Contains(logs.String(), "flux-node stopped") {
		t.Fatalf("no orderly stop in the log:\n%s", logs.String())
	}
}

func httpGet(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
