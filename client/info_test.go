package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	fluxerrs "github.com/fluxlimiter/flux/internal/errs"

	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/node"
)

// Limiters reports every algorithm's parameters, and FluxLimit turns them
// back into the flux.Limit the node runs.
func TestLimitersAlgorithms(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.NATSListen = "127.0.0.1:-1"
	cfg.HTTPListen = ""
	cfg.DataDir = t.TempDir()
	cfg.Limiters = map[string]node.LimiterConfig{
		"leaky": {Algorithm: "leaky-bucket", Rate: 50, Burst: 9},
		"log":   {Algorithm: "sliding-window-log", Limit: 5, Window: node.Duration(time.Minute)},
		"daily": {Algorithm: "fixed-window", Limit: 1000, Calendar: "day", Timezone: "Europe/Paris"},
	}
	n, err := node.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	infos, err := client.New(nc).Limiters(t.Context())
	if err != nil || len(infos) != 3 {
		t.Fatalf("Limiters = %+v, %v", infos, err)
	}
	for _, in := range infos {
		got, err := in.FluxLimit()
		if err != nil {
			t.Fatalf("%s: %v", in.Name, err)
		}
		lim, _ := n.Limiter(in.Name)
		want := lim.Limit()
		if got.Location.String() != want.Location.String() {
			t.Fatalf("%s: zone %v, want %v", in.Name, got.Location, want.Location)
		}
		got.Location = want.Location
		if got != want || int64(got.Capacity()) != in.Capacity {
			t.Fatalf("%s: FluxLimit = %+v (capacity %d), want %+v (capacity %d)", in.Name, got, got.Capacity(), want, in.Capacity)
		}
	}
	if in := infos[0]; in.Name != "daily" || in.Calendar != "day" || in.Timezone != "Europe/Paris" || in.Window != "" || in.Rate != nil {
		t.Fatalf("daily = %+v", in)
	}
	if _, err := (client.LimiterInfo{Name: "x", Algorithm: "quantum"}).FluxLimit(); !errors.Is(err, fluxerrs.InvalidAlgorithm) {
		t.Fatal("unknown algorithm accepted")
	}
	if _, err := (client.LimiterInfo{Algorithm: "fixed-window", Limit: 1, Calendar: "day", Timezone: "Nowhere/Else"}).FluxLimit(); !errors.Is(err, fluxerrs.InvalidWindow) {
		t.Fatal("unknown zone accepted")
	}
}
