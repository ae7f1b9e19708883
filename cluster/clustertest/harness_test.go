package clustertest_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fluxlimiter/flux/cluster"
	"github.com/fluxlimiter/flux/cluster/clustertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestHarness runs the full accuracy harness and prints its table. It
// takes about a minute, so it runs only when FLUX_CLUSTER_HARNESS is set:
//
//	FLUX_CLUSTER_HARNESS=1 go test ./cluster/clustertest -run Harness -v
//
// FLUX_CLUSTER_SECONDS (10) and FLUX_CLUSTER_KEYS (10000) size the runs.
func TestHarness(t *testing.T) {
	if os.Getenv("FLUX_CLUSTER_HARNESS") == "" {
		t.Skip("set FLUX_CLUSTER_HARNESS=1 to run the full harness")
	}
	seconds, keys := envInt("FLUX_CLUSTER_SECONDS", 10), envInt("FLUX_CLUSTER_KEYS", 10000)
	d := time.Duration(seconds) * time.Second
	bounds := map[cluster.Mode]float64{cluster.Strict: 1.00, cluster.BestEffort: 1.05, cluster.Hybrid: 1.02}
	runs := []clustertest.Config{
		{Rate: 200, Burst: 20, Keys: 1, Load: 3, Duration: d},
		{Rate: 2, Burst: 4, Keys: keys, Load: 2, Duration: d, Workers: 64},
	}
	for _, cfg := range runs {
		rs, err := clustertest.Harness(t.Context(), os.Stdout, cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if b, ok := bounds[r.Mode]; ok && r.MaxKeyRatio > b {
				t.Errorf("%s with %d keys: worst key admitted %.4f of its bound, want ≤ %.2f", r.Mode, r.Keys, r.MaxKeyRatio, b)
			}
		}
	}
	r, err := clustertest.Run(t.Context(), clustertest.Config{Mode: cluster.Hybrid, Rate: 20, Burst: 10, Keys: 100, Load: 0.3, Duration: d})
	if err != nil {
		t.Fatal(err)
	}
	clustertest.WriteTable(os.Stdout, []clustertest.Result{r})
	if r.LocalShare() < 0.9 {
		t.Errorf("hybrid far below the limit: %.1f%% local, want ≥ 90%%", 100*r.LocalShare())
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
