package node

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestDataDirInUse: a second node on the data dir of a running node (as
// two nodes on one machine without --data-dir get) refuses to start,
// naming the fix; once the first stops, the second starts.
func TestDataDirInUse(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("no flock: the data dir is not locked here")
	}
	first := testConfig(t)
	first.NodeID = "" // generated and kept in the data dir, as by default
	a, err := New(first, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}

	second := testConfig(t)
	second.NodeID, second.DataDir = "", first.DataDir
	b, err := New(second, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Start(ctx)
	b.Shutdown(context.Background())
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second node on the same data dir: Start = %v, want ErrDataDirInUse", err)
	}
	for _, want := range []string{first.DataDir, "--data-dir", "--node-id"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if a.ClientURL() == "" {
		t.Error("the failed second node disturbed the first")
	}

	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := New(second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("after the first node stopped: Start = %v", err)
	}
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
