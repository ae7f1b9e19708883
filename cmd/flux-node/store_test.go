package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/internal/storeenv"
)

// proc is a flux-node process.
type proc struct {
	cmd    *exec.Cmd
	logs   *logLines
	exited chan error
	url    string
}

// startProc runs the binary with args and waits until it answers.
func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: newLogLines(), exited: make(chan error, 1)}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(p.logs, sc.Text())
		}
	}()
	go func() {
		<-copied
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("node log:\n%s", p.logs.String())
		}
	})
	p.url = p.logs.find(t, `client_url=(\S+)`, 30*time.Second)
	p.logs.find(t, `(msg="try a check")`, 30*time.Second)
	return p
}

// stop sends sig and waits for the process to exit.
func (p *proc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if sig == syscall.SIGTERM && err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15s after %v", sig)
	}
}

func (p *proc) client(t *testing.T) *client.Client {
	t.Helper()
	nc, err := nats.Connect(p.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return client.New(nc)
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "flux-node")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// storeArgs returns the flags putting a node on backend, with a private
// prefix or schema removed when the test ends (the nats-kv data lives in
// dataDir).
func storeArgs(t *testing.T, backend string) []string {
	t.Helper()
	prefix := "fluxtest_" + storeenv.Suffix()
	ctx := context.Background()
	switch backend {
	case "redis":
		u := storeenv.RedisURL(t)
		opts, err := redis.ParseURL(u)
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(opts)
		if err := rdb.Ping(ctx).Err(); err != nil {
			rdb.Close()
			storeenv.Unreachable(t, storeenv.Redis, err)
		}
		t.Cleanup(func() {
			defer rdb.Close()
			iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
			for iter.Next(ctx) {
				rdb.Del(ctx, iter.Val())
			}
		})
		return []string{"--store", u, "--store-prefix", prefix}
	case "postgres":
		u := storeenv.PostgresURL(t)
		pool, err := pgxpool.New(ctx, u)
		if err == nil {
			if err = pool.Ping(ctx); err != nil {
				pool.Close()
			}
		}
		if err != nil {
			storeenv.Unreachable(t, storeenv.Postgres, err)
		}
		t.Cleanup(func() {
			defer pool.Close()
			if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{prefix}.Sanitize()+" CASCADE"); err != nil {
				t.Errorf("drop schema: %v", err)
			}
		})
		return []string{"--store", u, "--store-prefix", prefix}
	}
	return []string{"--store", "nats-kv"}
}

// Restarts through the real binary, per backend: drive keys to their
// limit, stop the node (SIGKILL under write-through; SIGTERM under
// write-behind; and SIGKILL under write-behind once a flush interval has
// passed), start a new node on the same store: every admission is still
// counted, so throttled keys stay throttled.
func TestStoreRestartBinary(t *testing.T) {
	bin := buildBinary(t)
	for _, backend := range []string{"nats-kv", "redis", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			for _, tc := range []struct {
				write string
				sig   syscall.Signal
				wait  time.Duration // before the signal
			}{
				{"through", syscall.SIGKILL, 0},
				{"behind", syscall.SIGTERM, 0},
				{"behind", syscall.SIGKILL, 600 * time.Millisecond},
			} {
				t.Run(fmt.Sprintf("%s/%v", tc.write, tc.sig), func(t *testing.T) {
					dir := t.TempDir()
					cfgPath := filepath.Join(dir, "flux.yaml")
					writeConfig(t, cfgPath, "limiters:\n  api: {rate: 0.01, burst: 4}\n")
					args := append([]string{"--config", cfgPath, "--nats-listen", "127.0.0.1:-1", "--http-listen", "",
						"--data-dir", filepath.Join(dir, "data"), "--store-write", tc.write, "--flush-interval", "200ms"},
						storeArgs(t, backend)...)
					a := startProc(t, bin, args...)
					c := a.client(t)
					for i := range 6 {
						d, err := c.Check(t.Context(), "api", "alice", 1)
						if err != nil || d.Allowed != (i < 5) {
							t.Fatalf("alice check %d: %+v %v", i, d, err)
						}
					}
					const keys = 30
					for k := range keys {
						if d, err := c.Check(t.Context(), "api", fmt.Sprint("user", k), 1+k%3); err != nil || !d.Allowed {
							t.Fatalf("user%d: %+v %v", k, d, err)
						}
					}
					time.Sleep(tc.wait)
					a.stop(t, tc.sig)

					b := startProc(t, bin, args...)
					c = b.client(t)
					if d, err := c.Check(t.Context(), "api", "alice", 1); err != nil || d.Allowed {
						t.Fatalf("alice after the restart: %+v %v; want still denied", d, err)
					}
					for k := range keys {
						d, err := c.Check(t.Context(), "api", fmt.Sprint("user", k), 0)
						if err != nil || d.Remaining != 5-(1+k%3) {
							t.Fatalf("user%d after the restart: %+v %v; want %d left", k, d, err, 5-(1+k%3))
						}
					}
					b.stop(t, syscall.SIGTERM)
				})
			}
		})
	}
}
