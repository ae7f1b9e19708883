package client_test

import (
	"errors"
	"testing"
	"time"

	fluxerrs "github.com/fluxlimiter/flux/internal/errs"

	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/node"
	"github.com/fluxlimiter/flux/node/nodetest"
	"github.com/fluxlimiter/flux/protocol"
)

// Limiters reports every algorithm's parameters, and FluxLimit turns them
// back into the flux.Limit the node runs.
func TestLimitersAlgorithms(t *testing.T) {
	n := nodetest.Start(t, nodetest.Config(t, map[string]node.LimiterConfig{
		"leaky": {Algorithm: "leaky-bucket", Rate: 50, Burst: 9},
		"log":   {Algorithm: "sliding-window-log", Limit: 5, Window: node.Duration(time.Minute)},
		"daily": {Algorithm: "fixed-window", Limit: 1000, Calendar: "day", Timezone: "Europe/Paris"},
	}))
	nc := nodetest.Connect(t, n)
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
	if _, err := (protocol.LimiterInfo{Name: "x", Algorithm: "quantum"}).FluxLimit(); !errors.Is(err, fluxerrs.InvalidAlgorithm) {
		t.Fatal("unknown algorithm accepted")
	}
	if _, err := (protocol.LimiterInfo{Algorithm: "fixed-window", Limit: 1, Calendar: "day", Timezone: "Nowhere/Else"}).FluxLimit(); !errors.Is(err, fluxerrs.InvalidWindow) {
		t.Fatal("unknown zone accepted")
	}
}
