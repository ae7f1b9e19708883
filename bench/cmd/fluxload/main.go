// Command fluxload drives a flux-node over NATS with many requests in
// flight and prints checks/s and p50/p99 latency, one key per request and
// 100 keys per request, over many keys. In the same run, interleaved, it
// sends the same load to gubernator v2.13.0 (a one-node daemon started in
// this process, called through its gRPC client), to a NATS responder that
// returns canned replies (the transport's ceiling) and, with -redis-url, to
// a GCRA Lua script on Redis, and prints the ratios; then it measures the
// node's latency at half of its peak rate (open loop).
//
// By default it starts the flux-node in this process (embedded NATS server
// on a random loopback port); with -nats-url it drives a node that is
// already running and must serve the limiter named by -limiter. Every run
// is bounded by -duration; the whole tool stops by itself.
//
//	go run ./cmd/fluxload                      # everything, about 3 minutes
//	go run ./cmd/fluxload -runs 1 -duration 2s # a quick look
//	go run ./cmd/fluxload -nats-url nats://127.0.0.1:14222 -limiter api
//	go run ./cmd/fluxload -redis-url redis://127.0.0.1:6379/15
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux/bench"
	"github.com/fluxlimiter/flux/bench/load"
	"github.com/fluxlimiter/flux/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fluxload:", err)
		os.Exit(1)
	}
}

// Targets from DESIGN.md section 8.
const (
	targetSingle      = 300_000   // checks/s, one key per request
	targetBatch       = 2_000_000 // checks/s, 100 keys per request
	targetRatio       = 12.0      // × gubernator, both cases
	targetHalfPeakP99 = time.Millisecond
)

type options struct {
	natsURL      string
	node         nodeOptions
	keys         int
	batch        int
	duration     time.Duration
	warmup       time.Duration
	runs         int
	conns        int
	inflight     int
	batchFlight  int
	gubernator   bool
	guberFlight  int
	guberBFlight int
	guberConns   int
	halfPeak     bool
	halfFlight   int
	fractions    []float64
	tick         time.Duration
	echo         bool
	echoSubs     int
	redisURL     string
	redisFlight  int
	redisBFlight int
	useRequest   bool
	cpuProfile   string
	memProfile   string
	strict       bool
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("fluxload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.natsURL, "nats-url", "", "drive the flux-node serving at this NATS URL instead of starting one in-process")
	fs.StringVar(&o.node.limiter, "limiter", "bench", "limiter name in every check (an in-process node is configured with it)")
	fs.Float64Var(&o.node.rate, "rate", 1000, "in-process node: the limiter's rate per second per key (gubernator gets the same limit)")
	fs.Float64Var(&o.node.burst, "burst", 1000, "in-process node: the limiter's burst (capacity = burst+1)")
	fs.IntVar(&o.node.handlers, "node-handlers", 0, "in-process node: subscriptions per endpoint (0: the node's default)")
	fs.IntVar(&o.node.shards, "node-shards", 0, "in-process node: shards per limiter (0: the node's default)")
	fs.IntVar(&o.keys, "keys", 100_000, "distinct keys, drawn uniformly at random")
	fs.IntVar(&o.batch, "batch", 100, "keys per request in the batched case")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each measured run")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured run before the first round, per target and case (0: none)")
	fs.IntVar(&o.runs, "runs", 3, "rounds; each round runs every case on every target, and the report gives medians")
	fs.IntVar(&o.conns, "conns", 2, "NATS connections of the load generator")
	fs.IntVar(&o.inflight, "inflight", 512, "requests in flight to flux-node, one key per request")
	fs.IntVar(&o.batchFlight, "batch-inflight", 32, "requests in flight to flux-node, batched")
	fs.BoolVar(&o.gubernator, "gubernator", true, "also run the load against gubernator")
	fs.IntVar(&o.guberFlight, "guber-inflight", 64, "requests in flight to gubernator, one key per request")
	fs.IntVar(&o.guberBFlight, "guber-batch-inflight", 16, "requests in flight to gubernator, batched")
	fs.IntVar(&o.guberConns, "guber-conns", 2, "gRPC connections to gubernator")
	fs.BoolVar(&o.halfPeak, "half-peak", true, "measure flux-node's latency at half of its measured peak rate (open loop)")
	fs.IntVar(&o.halfFlight, "half-peak-inflight", 8192, "most requests in flight in the half-peak runs")
	fractions := fs.String("fractions", "0.5", "half-peak runs: the fractions of the measured peak rate to run at, comma-separated (the target is for 0.5)")
	fs.DurationVar(&o.tick, "tick", 250*time.Microsecond, "half-peak runs: the open-loop sender's shortest sleep; requests due meanwhile go out together")
	fs.BoolVar(&o.echo, "echo", true, "also run the load against a canned-reply NATS responder (the transport's ceiling)")
	fs.IntVar(&o.echoSubs, "echo-subs", 4, "subscriptions of the echo responder per subject, in one queue group")
	fs.StringVar(&o.redisURL, "redis-url", "", "also run the load against a GCRA Lua script on this Redis (e.g. redis://127.0.0.1:6379/15; use a database of its own)")
	fs.IntVar(&o.redisFlight, "redis-inflight", 64, "requests in flight to Redis (and pool size), one key per request")
	fs.IntVar(&o.redisBFlight, "redis-batch-inflight", 8, "pipelines in flight to Redis, batched")
	fs.BoolVar(&o.useRequest, "request", false, "send with nc.Request from -inflight goroutines instead of the pipelined sender (closed-loop runs only)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole process (generator, in-process node and peers) to this file")
	fs.StringVar(&o.memProfile, "memprofile", "", "write an allocation profile of the whole process to this file at the end")
	fs.BoolVar(&o.strict, "strict", false, "exit with status 1 if a target is missed")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	for f := range strings.SplitSeq(*fractions, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 || v > 1 {
			return o, fmt.Errorf("-fractions: %q is not in (0, 1]", f)
		}
		o.fractions = append(o.fractions, v)
	}
	if len(o.fractions) > 10 {
		return o, errors.New("-fractions: at most 10")
	}
	switch {
	case o.duration <= 0 || o.duration > 10*time.Minute:
		return o, errors.New("-duration must be in (0, 10m]")
	case o.warmup < 0 || o.warmup > time.Minute:
		return o, errors.New("-warmup must be in [0, 1m]")
	case o.runs < 1 || o.runs > 50:
		return o, errors.New("-runs must be in [1, 50]")
	case o.keys < 1 || o.keys > 10_000_000:
		return o, errors.New("-keys must be in [1, 10M]")
	case o.batch < 2 || o.batch > 1000:
		return o, errors.New("-batch must be in [2, 1000] (gubernator takes at most 1000)")
	case o.conns < 1 || o.guberConns < 1 || o.conns > 64 || o.guberConns > 64:
		return o, errors.New("-conns and -guber-conns must be in [1, 64]")
	case o.tick < time.Microsecond || o.tick > 100*time.Millisecond:
		return o, errors.New("-tick must be in [1µs, 100ms]")
	}
	for _, n := range []int{o.inflight, o.batchFlight, o.guberFlight, o.guberBFlight, o.halfFlight, o.redisFlight, o.redisBFlight} {
		if n < 1 || n > 1<<16 {
			return o, errors.New("in-flight counts must be in [1, 65536]")
		}
	}
	o.node.maxBatch = o.batch
	return o, nil
}

// A case is one request shape.
type loadCase struct {
	name        string
	batch       int
	fluxFlight  int
	guberFlight int
	redisFlight int
	target      float64
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parse(args, os.Stderr)
	if err != nil {
		return err
	}

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	if o.memProfile != "" {
		defer func() {
			f, err := os.Create(o.memProfile)
			if err != nil {
				fmt.Fprintln(os.Stderr, "fluxload:", err)
				return
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				fmt.Fprintln(os.Stderr, "fluxload:", err)
			}
		}()
	}

	url := o.natsURL
	where := "flux-node at " + url
	var echoOpts []nats.Option // the echo's connections, in-process: the node's rights
	if url == "" {
		var stop func()
		url, stop, echoOpts, err = startNode(ctx, o.node)
		if err != nil {
			return err
		}
		defer stop()
		where = "flux-node in-process at " + url
		// Run the process as the flux-node binary runs (GOGC=400 unless
		// GOGC or GOMEMLIMIT is set): the node's traffic dominates it.
		if node.TuneGC() {
			where += fmt.Sprintf(" (GOGC=%d, as the binary)", node.GCPercent)
		}
	}
	sender := "pipelined sender"
	if o.useRequest {
		sender = "nc.Request"
	}
	fmt.Fprintf(stdout, "fluxload: %s; limiter %q; %d keys; GOMAXPROCS=%d, %d CPUs; %d rounds of %v per case; %d NATS connections, %s\n",
		where, o.node.limiter, o.keys, runtime.GOMAXPROCS(0), runtime.NumCPU(), o.runs, o.duration, o.conns, sender)

	var guber *load.GubernatorDaemon
	if o.gubernator {
		guber, err = load.StartGubernator(ctx, 2*o.keys)
		if err != nil {
			return err
		}
		defer guber.Close()
		fmt.Fprintf(stdout, "gubernator v2.13.0 in-process at %s (one node, behavior BATCHING, TOKEN_BUCKET, limit %d per %v)\n",
			guber.Addr, guberLimit(o), guberWindow(o))
	}
	fmt.Fprintln(stdout)

	if o.echo {
		stop, err := load.StartEcho(url, o.echoSubs, o.batch, echoOpts...)
		if err != nil {
			return err
		}
		defer stop()
	}

	fluxT := load.NATS{URL: url, Limiter: o.node.limiter, UseRequest: o.useRequest}
	redisT := load.Redis{URL: o.redisURL, Prefix: "fluxload:", Rate: o.node.rate, Burst: o.node.burst}
	guberT := load.Gubernator{Addr: addrOf(guber), Name: o.node.limiter, Limit: guberLimit(o), Duration: guberWindow(o)}
	cases := []loadCase{
		{name: "1 key/request", batch: 1, fluxFlight: o.inflight, guberFlight: o.guberFlight, redisFlight: o.redisFlight, target: targetSingle},
		{name: fmt.Sprintf("%d keys/request", o.batch), batch: o.batch, fluxFlight: o.batchFlight, guberFlight: o.guberBFlight, redisFlight: o.redisBFlight, target: targetBatch},
	}
	cfgFor := func(c loadCase, system string, d time.Duration) load.Config {
		cfg := load.Config{
			Name: fmt.Sprintf("%s, %s", system, c.name), Keys: o.keys, Batch: c.batch,
			InFlight: c.fluxFlight, Conns: o.conns, Duration: d,
		}
		switch system {
		case "gubernator":
			cfg.InFlight, cfg.Conns = c.guberFlight, o.guberConns
		case "redis":
			cfg.InFlight = c.redisFlight
		}
		return cfg
	}
	runEcho := func(cfg load.Config, batch int) (*load.Result, error) {
		echoT := fluxT
		echoT.Options = append(echoT.Options, echoOpts...)
		echoT.Subject = load.SubjectEcho
		if batch > 1 {
			echoT.Subject = load.SubjectEchoBatch
		}
		return echoT.Run(ctx, cfg)
	}
	runOne := func(c loadCase, system string, d time.Duration) (*load.Result, error) {
		switch system {
		case "gubernator":
			return guberT.Run(ctx, cfgFor(c, system, d))
		case "redis":
			return redisT.Run(ctx, cfgFor(c, system, d))
		case "nats-echo":
			return runEcho(cfgFor(c, system, d), c.batch)
		}
		return fluxT.Run(ctx, cfgFor(c, system, d))
	}
	systems := []string{"flux-node"}
	if o.gubernator {
		systems = append(systems, "gubernator")
	}
	if o.redisURL != "" {
		systems = append(systems, "redis")
	}
	if o.echo {
		systems = append(systems, "nats-echo")
	}

	if o.warmup > 0 {
		for _, c := range cases {
			for _, s := range systems {
				if _, err := runOne(c, s, o.warmup); err != nil {
					return fmt.Errorf("warmup %s, %s: %w", s, c.name, err)
				}
			}
		}
	}

	// results[case][system] over rounds.
	results := make([]map[string][]*load.Result, len(cases))
	for i := range results {
		results[i] = map[string][]*load.Result{}
	}
	for r := range o.runs {
		for i, c := range cases {
			for _, s := range systems {
				c0, t0 := processCPU(), time.Now()
				res, err := runOne(c, s, o.duration)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", s, c.name, err)
				}
				results[i][s] = append(results[i][s], res)
				fmt.Fprintf(stdout, "round %d  %s  [process CPU %s]\n", r+1, res, cpuShare(processCPU()-c0, time.Since(t0)))
			}
		}
	}

	var missed []string
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "median of %d\tchecks/s\treq/s\tp50\tp99\terrors\t\n", o.runs)
	for i, c := range cases {
		for _, s := range systems {
			rs := results[i][s]
			fmt.Fprintf(tw, "%s, %s\t%.0f\t%.0f\t%v\t%v\t%d\t\n", s, c.name,
				median(rs, (*load.Result).ChecksPerSec), median(rs, (*load.Result).RequestsPerSec),
				medianDur(rs, 0.5), medianDur(rs, 0.99), sumErrors(rs))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	for i, c := range cases {
		f := results[i]["flux-node"]
		peak := median(f, (*load.Result).ChecksPerSec)
		fmt.Fprintf(stdout, "flux-node, %s: %.0f checks/s (target ≥ %.0f)", c.name, peak, c.target)
		if peak < c.target {
			missed = append(missed, fmt.Sprintf("%s: %.0f checks/s < %.0f", c.name, peak, c.target))
		}
		if g, ok := results[i]["gubernator"]; ok {
			r := ratio(f, g)
			fmt.Fprintf(stdout, "; %.1fx gubernator (median of per-round ratios; target ≥ %.0fx)", r, targetRatio)
			if r < targetRatio {
				missed = append(missed, fmt.Sprintf("%s: %.1fx gubernator < %.0fx", c.name, r, targetRatio))
			}
		}
		if e, ok := results[i]["redis"]; ok {
			fmt.Fprintf(stdout, "; %.1fx Redis Lua GCRA", ratio(f, e))
		}
		if e, ok := results[i]["nats-echo"]; ok {
			fmt.Fprintf(stdout, "; %.0f%% of the NATS echo ceiling", 100*ratio(f, e))
		}
		fmt.Fprintln(stdout)
	}

	if o.halfPeak && !o.useRequest {
		fmt.Fprintln(stdout)
		for i, c := range cases {
			peak := median(results[i]["flux-node"], (*load.Result).RequestsPerSec)
			for _, frac := range o.fractions {
				rate := peak * frac
				if rate < 1 {
					continue
				}
				what := fmt.Sprintf("%.0f%% of peak", 100*frac)
				cfg := cfgFor(c, "flux-node", o.duration)
				cfg.Name = "flux-node, " + c.name + ", " + what
				cfg.Rate, cfg.InFlight, cfg.Tick = rate, o.halfFlight, o.tick
				var p50s, p99s []time.Duration
				for range o.runs {
					c0, t0 := processCPU(), time.Now()
					res, err := fluxT.Run(ctx, cfg)
					if err != nil {
						return fmt.Errorf("%s: %w", cfg.Name, err)
					}
					fmt.Fprintf(stdout, "%s  [process CPU %s]\n", res, cpuShare(processCPU()-c0, time.Since(t0)))
					p50s = append(p50s, res.Latency.Quantile(0.5))
					p99s = append(p99s, res.Latency.Quantile(0.99))
				}
				p99 := medianOf(p99s)
				fmt.Fprintf(stdout, "flux-node, %s at %s (%.0f req/s = %.0f checks/s): median p50 %v, p99 %v",
					c.name, what, rate, rate*float64(c.batch), medianOf(p50s), p99)
				if frac == 0.5 {
					fmt.Fprintf(stdout, " (target p99 < %v)", targetHalfPeakP99)
					if p99 >= targetHalfPeakP99 {
						missed = append(missed, fmt.Sprintf("%s: p99 %v at half of peak ≥ %v", c.name, p99, targetHalfPeakP99))
					}
				}
				if o.echo {
					// The transport alone, at the same request rate: how much
					// of the latency is NATS request-reply on this machine.
					ecfg := cfg
					ecfg.Name = "nats-echo, " + c.name + ", same rate"
					var ep99s []time.Duration
					for range o.runs {
						res, err := runEcho(ecfg, c.batch)
						if err != nil {
							return fmt.Errorf("%s: %w", ecfg.Name, err)
						}
						fmt.Fprintf(stdout, "\n%s", res)
						ep99s = append(ep99s, res.Latency.Quantile(0.99))
					}
					fmt.Fprintf(stdout, "\nthe NATS echo responder at the same rate: median p99 %v", medianOf(ep99s))
				}
				fmt.Fprint(stdout, "\n\n")
			}
		}
	}

	if len(missed) > 0 {
		fmt.Fprintln(stdout, "MISSED:")
		for _, m := range missed {
			fmt.Fprintln(stdout, "  "+m)
		}
		if o.strict {
			return errors.New("targets missed")
		}
	} else {
		fmt.Fprintln(stdout, "all targets met")
	}
	return nil
}

// guberLimit and guberWindow give gubernator the node's limit as a token
// bucket: capacity burst+1, refilled over capacity/rate.
func guberLimit(o options) int64 { return int64(o.node.burst) + 1 }

func guberWindow(o options) time.Duration {
	return time.Duration(float64(guberLimit(o)) / o.node.rate * float64(time.Second))
}

// ratio returns the median over rounds of a's checks/s over b's.
func ratio(a, b []*load.Result) float64 {
	rs := make([]float64, len(a))
	for i := range a {
		rs[i] = a[i].ChecksPerSec() / b[i].ChecksPerSec()
	}
	return bench.Median(rs)
}

func addrOf(g *load.GubernatorDaemon) string {
	if g == nil {
		return ""
	}
	return g.Addr
}

func median(rs []*load.Result, f func(*load.Result) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return bench.Median(xs)
}

func medianDur(rs []*load.Result, q float64) time.Duration {
	ds := make([]time.Duration, len(rs))
	for i, r := range rs {
		ds[i] = r.Latency.Quantile(q)
	}
	return medianOf(ds)
}

func medianOf(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(bench.Median(xs)).Round(time.Microsecond)
}

func sumErrors(rs []*load.Result) uint64 {
	var n uint64
	for _, r := range rs {
		n += r.Errors
	}
	return n
}

// cpuShare formats CPU time used over a wall-clock span as a share of the
// machine's cores: how busy generator, NATS and node kept the machine.
func cpuShare(cpu, wall time.Duration) string {
	if cpu <= 0 || wall <= 0 {
		return "not measured"
	}
	return fmt.Sprintf("%.0f%% of %d cores", 100*cpu.Seconds()/wall.Seconds()/float64(runtime.NumCPU()), runtime.NumCPU())
}
