// Command ratecmp runs Flux's core benchmarks side by side with
// golang.org/x/time/rate (one limiter per key in a sync.Map) over the same
// keys, in interleaved rounds, and prints each side's median ns per key
// and the ratios; then the bytes per idle key with one million keys; then
// the machine anchors of DESIGN.md section 8 (plain Go, no Flux) beside the
// design's values, to tell how this machine compares with the one the
// targets were set on.
//
//	go run ./cmd/ratecmp [-rounds 5] [-benchtime 1s] [-mem-keys 1000000] [-strict]
//
// With -strict it exits with status 1 if a target is missed (CheckBatch at
// least 3x faster per key than x/time/rate, at most 64 B per idle key).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime"
	"testing"
	"text/tabwriter"

	"github.com/fluxlimiter/flux/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ratecmp:", err)
		os.Exit(1)
	}
}

// Targets from DESIGN.md section 8.
const (
	minBatchRatio    = 3.0
	maxBytesPerKey   = 64.0
	maxBatchNsPerKey = 30.0
	maxCheckNs       = 400.0
)

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ratecmp", flag.ContinueOnError)
	rounds := fs.Int("rounds", 5, "interleaved rounds of every benchmark (the medians are over these)")
	benchtime := fs.String("benchtime", "1s", "run time of each benchmark in each round (as go test -benchtime)")
	memKeys := fs.Int("mem-keys", 1_000_000, "keys for the memory measurement (0 skips it)")
	strict := fs.Bool("strict", false, "exit with status 1 if a target is missed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rounds < 1 {
		return fmt.Errorf("-rounds must be at least 1")
	}
	testing.Init()
	if err := flag.Set("test.benchtime", *benchtime); err != nil {
		return fmt.Errorf("-benchtime: %w", err)
	}

	fmt.Fprintf(stdout, "GOMAXPROCS=%d, %d keys, CheckBatch of %d, %d rounds of %s\n\n",
		runtime.GOMAXPROCS(0), bench.Keys, bench.BatchSize, *rounds, *benchtime)

	var missed []string
	if *memKeys > 0 {
		r, err := bench.IdleKeyMemory(*memKeys)
		if err != nil {
			return fmt.Errorf("memory: %w", err)
		}
		fmt.Fprintf(stdout, "memory: %s (target ≤ %.0f B)\n\n", r, maxBytesPerKey)
		if r.BytesPerKey > maxBytesPerKey {
			missed = append(missed, fmt.Sprintf("%.1f B per idle key > %.0f", r.BytesPerKey, maxBytesPerKey))
		}
	}

	benches := []struct {
		name string
		fn   func(*testing.B)
	}{
		{"x/time/rate Allow, sync.Map, parallel", bench.XTimeRate},
		{"flux CheckBatch(64), parallel", bench.FluxCheckBatch},
		{"flux Check, parallel", bench.FluxCheck},
		{"x/time/rate Allow, sync.Map, one goroutine", bench.XTimeRateSerial},
		{"flux CheckBatch(64), one caller", bench.FluxCheckBatchSerial},
	}
	anchors := make([][]float64, len(bench.Anchors))
	perKey := make([][]float64, len(benches))
	allocs := make([]int64, len(benches))
	var batchRatios, checkRatios, serialRatios []float64
	for r := range *rounds {
		row := make([]float64, len(benches))
		for i, bm := range benches {
			if err := ctx.Err(); err != nil {
				return err
			}
			res := testing.Benchmark(bm.fn)
			if res.N == 0 {
				return fmt.Errorf("%s: benchmark failed", bm.name)
			}
			row[i] = res.Extra["ns/key"]
			perKey[i] = append(perKey[i], row[i])
			allocs[i] = max(allocs[i], res.AllocsPerOp())
		}
		for i, a := range bench.Anchors {
			res := testing.Benchmark(a.Fn)
			if res.N == 0 {
				return fmt.Errorf("anchor %s: benchmark failed", a.Name)
			}
			anchors[i] = append(anchors[i], res.Extra["ns/key"])
		}
		batchRatios = append(batchRatios, row[0]/row[1])
		checkRatios = append(checkRatios, row[0]/row[2])
		serialRatios = append(serialRatios, row[3]/row[4])
		fmt.Fprintf(stdout, "round %d: x/time/rate %.1f ns/key, CheckBatch %.1f ns/key (%.2fx), Check %.1f ns/key (%.2fx); one goroutine: x/time/rate %.1f, CheckBatch %.1f (%.2fx)\n",
			r+1, row[0], row[1], row[0]/row[1], row[2], row[0]/row[2], row[3], row[4], row[3]/row[4])
	}

	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "benchmark\tmedian ns/key\tmin\tmax\tmax allocs/op\t")
	for i, bm := range benches {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%d\t\n", bm.name, bench.Median(perKey[i]), minOf(perKey[i]), maxOf(perKey[i]), allocs[i])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The machine against the design's: each anchor's median over its
	// design value, and their geometric mean.
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "machine anchor (DESIGN.md §8)	median ns	design ns	here/design	")
	xt := bench.Median(perKey[0])
	fmt.Fprintf(tw, "%s	%.1f	%d	%.2f	\n", benches[0].name, xt, bench.DesignXTimeRate, xt/bench.DesignXTimeRate)
	logSum := math.Log(xt / bench.DesignXTimeRate)
	for i, a := range bench.Anchors {
		m := bench.Median(anchors[i])
		fmt.Fprintf(tw, "%s	%.1f	%.0f	%.2f	\n", a.Name, m, a.Design, m/a.Design)
		logSum += math.Log(m / a.Design)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	scale := math.Exp(logSum / float64(len(bench.Anchors)+1))
	fmt.Fprintf(stdout, "this machine runs the anchors %.2fx the design's times (geometric mean): CheckBatch's ≤ %.0f ns/key and Check's ≤ %.0f ns there correspond to about %.0f and %.0f here\n",
		scale, maxBatchNsPerKey, maxCheckNs, maxBatchNsPerKey*scale, maxCheckNs*scale)

	br := bench.Median(batchRatios)
	fmt.Fprintf(stdout, "\nCheckBatch(64) is %.2fx faster per key than x/time/rate (median of per-round ratios; target ≥ %.0fx)\n", br, minBatchRatio)
	fmt.Fprintf(stdout, "Check is %.2fx the speed of x/time/rate per key (median of per-round ratios)\n", bench.Median(checkRatios))
	fmt.Fprintf(stdout, "from one goroutine, CheckBatch(64) is %.2fx faster per key than x/time/rate (less sensitive to a busy machine: no lock-holder preemption)\n", bench.Median(serialRatios))
	if br < minBatchRatio {
		missed = append(missed, fmt.Sprintf("CheckBatch ratio %.2fx < %.0fx", br, minBatchRatio))
	}
	if len(missed) > 0 {
		fmt.Fprintf(stdout, "\nMISSED: %v\n", missed)
		if *strict {
			return fmt.Errorf("targets missed")
		}
	}
	return nil
}

func minOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs[1:] {
		m = min(m, x)
	}
	return m
}

func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs[1:] {
		m = max(m, x)
	}
	return m
}
