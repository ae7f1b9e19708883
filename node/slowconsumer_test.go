package node

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// A real slow consumer (a subscription past its pending limit) reaches the
// node's asynchronous error handler (the one connect installs), which logs it at WARN with the
// subscription's subject, once per slowLogEvery however many messages drop.
func TestSlowConsumerLoggedAtWarn(t *testing.T) {
	var logs syncBuffer
	n := &Node{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	dial := func(opts ...nats.Option) *nats.Conn {
		nc, err := nats.Connect(srv.ClientURL(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	nc := dial(nats.ErrorHandler(n.natsErrorHandler(newSlowLog(n.log))))
	sub, err := nc.SubscribeSync("flux.test.slow")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(2, 1<<20); err != nil {
		t.Fatal(err)
	}
	pub := dial()
	for range 100 {
		if err := pub.Publish("flux.test.slow", make([]byte, 1024)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slow-consumer warning", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "NATS slow consumer")
	})
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "subject=flux.test.slow") {
		t.Fatalf("want a WARN naming the subject, got:\n%s", out)
	}
	if c := strings.Count(out, "NATS slow consumer"); c != 1 {
		t.Fatalf("%d slow-consumer warnings for one flood, want 1 (rate-limited):\n%s", c, out)
	}
	if d, _ := sub.Dropped(); d == 0 {
		t.Fatal("no message dropped: the test made no slow consumer")
	}
}

// The rate limit is per subject and reports what it held back.
func TestSlowLogRateLimit(t *testing.T) {
	var logs syncBuffer
	sl := newSlowLog(slog.New(slog.NewTextHandler(&logs, nil)))
	now := time.Unix(1000, 0)
	sl.now = func() time.Time { return now }
	sl.event("a", "slow")
	sl.event("a", "slow")
	sl.event("a", "slow")
	sl.event("b", "slow")
	if c := strings.Count(logs.String(), "level=WARN"); c != 2 {
		t.Fatalf("%d warnings, want 2 (one per subject):\n%s", c, logs.String())
	}
	now = now.Add(slowLogEvery)
	sl.event("a", "slow")
	if !strings.Contains(logs.String(), "subject=a suppressed=2") {
		t.Fatalf("the next warning does not count the 2 held back:\n%s", logs.String())
	}
}

// The embedded server's slow-consumer notices, logged at debug like its
// other notices before, are warnings.
func TestServerSlowConsumerNoticeAtWarn(t *testing.T) {
	var logs syncBuffer
	l := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	g := natsLogger{l: l, slow: newSlowLog(l)}
	g.Noticef("%s - Slow Consumer Detected: WriteDeadline of %v exceeded", "cid:5", 10*time.Second)
	g.Noticef("Listening for client connections on %s", "127.0.0.1:4222")
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "Slow Consumer Detected") {
		t.Fatalf("want the slow-consumer notice at WARN, got:\n%s", out)
	}
	if strings.Contains(out, "Listening") {
		t.Fatalf("other notices stay at debug:\n%s", out)
	}
}
