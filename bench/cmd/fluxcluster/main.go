// Command fluxcluster measures Flux clusters (issue 6, docs/CLUSTER.md).
//
// Throughput: it starts real flux-nodes in this process (node.New +
// Start, each with its embedded NATS server, the servers clustered with
// routes on loopback) serving one limiter that admits everything, and
// drives them over NATS like fluxload does (one key per request, and 100
// keys per check_batch), the client connections spread over the nodes'
// servers. Cases: 1 node (mode local, no cluster), then N nodes in modes
// local, best-effort, strict and hybrid, in -rounds interleaved rounds; it
// prints each round's checks/s and latency, then the medians and the
// ratio to one node.
//
// Accuracy (-accuracy): the harness of cluster/clustertest (N nodes, one
// key at R/s offered 3×R for -accuracy-seconds; then 10k keys offered 2×
// their limit; then hybrid far below the limit), printing its tables.
//
//	go run ./cmd/fluxcluster                          # throughput, about 2 minutes
//	go run ./cmd/fluxcluster -rounds 1 -duration 2s   # a quick look
//	go run ./cmd/fluxcluster -throughput=false -accuracy
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fluxlimiter/flux/bench/load"
	"github.com/fluxlimiter/flux/cluster"
	"github.com/fluxlimiter/flux/cluster/clustertest"
	"github.com/fluxlimiter/flux/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fluxcluster:", err)
		os.Exit(1)
	}
}

const limiterName = "bench"

type options struct {
	nodes       int
	modes       []string
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	keys        int
	conns       int
	inflight    int
	batchFlight int
	heartbeat   time.Duration
	handlers    int
	throughput  bool
	accuracy    bool
	accSeconds  int
	accKeys     int
}

func run(ctx context.Context, args []string, w io.Writer) error {
	var o options
	fs := flag.NewFlagSet("fluxcluster", flag.ContinueOnError)
	fs.IntVar(&o.nodes, "nodes", 3, "nodes in the cluster")
	modes := fs.String("modes", "local,best-effort,strict,hybrid", "modes to measure on the cluster, comma-separated")
	fs.IntVar(&o.rounds, "rounds", 3, "interleaved rounds of every case")
	fs.DurationVar(&o.duration, "duration", 4*time.Second, "length of each measured run")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each case")
	fs.IntVar(&o.keys, "keys", 100_000, "distinct keys, drawn uniformly at random")
	fs.IntVar(&o.conns, "conns", 12, "client connections, spread over the nodes' servers")
	fs.IntVar(&o.inflight, "inflight", 512, "requests in flight, one key per request")
	fs.IntVar(&o.batchFlight, "batch-inflight", 32, "requests in flight, 100 keys per request")
	fs.DurationVar(&o.heartbeat, "heartbeat", 200*time.Millisecond, "cluster heartbeat interval")
	fs.IntVar(&o.handlers, "handlers", 0, "workers per endpoint on each node (0: flux-node's default)")
	fs.BoolVar(&o.throughput, "throughput", true, "measure checks/s")
	fs.BoolVar(&o.accuracy, "accuracy", false, "run the accuracy harness (about 2 minutes with the defaults)")
	fs.IntVar(&o.accSeconds, "accuracy-seconds", 10, "length of each accuracy run")
	fs.IntVar(&o.accKeys, "accuracy-keys", 10_000, "keys of the many-keys accuracy run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.modes = strings.Split(*modes, ",")
	for _, m := range o.modes {
		if _, err := cluster.ParseMode(m); err != nil {
			return err
		}
	}
	if o.throughput {
		if err := throughput(ctx, o, w); err != nil {
			return err
		}
	}
	if o.accuracy {
		return accuracy(ctx, o, w)
	}
	return nil
}

// setup is one configuration measured: n nodes, all in one mode.
type setup struct {
	name  string
	nodes int
	mode  string
}

type sample struct {
	setup setup
	batch int
	res   *load.Result
}

func throughput(ctx context.Context, o options, w io.Writer) error {
	setups := []setup{{"1 node", 1, "local"}}
	for _, m := range o.modes {
		setups = append(setups, setup{fmt.Sprintf("%d nodes %s", o.nodes, m), o.nodes, m})
	}
	fmt.Fprintf(w, "flux-node clusters in one process, %d keys, limiter admitting everything; %d × %v per case\n", o.keys, o.rounds, o.duration)
	var samples []sample
	for round := range o.rounds {
		for _, s := range setups {
			rs, err := measure(ctx, o, s)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			for _, r := range rs {
				fmt.Fprintf(w, "round %d  %s\n", round+1, r.res)
			}
			samples = append(samples, rs...)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "setup\tkeys/request\tchecks/s (median)\tvs 1 node\tp50\tp99\terrors\t")
	for _, batch := range []int{1, 100} {
		var base float64
		for _, s := range setups {
			var cps []float64
			var p50, p99 []time.Duration
			var errs uint64
			for _, x := range samples {
				if x.setup == s && x.batch == batch {
					cps = append(cps, x.res.ChecksPerSec())
					p50 = append(p50, x.res.Latency.Quantile(0.5))
					p99 = append(p99, x.res.Latency.Quantile(0.99))
					errs += x.res.Errors
				}
			}
			m := median(cps)
			if s.nodes == 1 {
				base = m
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f×\t%v\t%v\t%d\t\n", s.name, batch, m, m/base,
				median(p50).Round(time.Microsecond), median(p99).Round(time.Microsecond), errs)
		}
	}
	return tw.Flush()
}

func median[T int64 | float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// measure starts s's cluster, warms it up and runs both cases.
func measure(ctx context.Context, o options, s setup) ([]sample, error) {
	urls, stop, err := startCluster(ctx, o, s)
	if err != nil {
		return nil, err
	}
	defer stop()
	t := load.NATS{URL: strings.Join(urls, ","), Limiter: limiterName}
	var out []sample
	for _, c := range []load.Config{
		{Name: s.name + " 1 key/req", Batch: 1, InFlight: o.inflight},
		{Name: s.name + " 100 keys/req", Batch: 100, InFlight: o.batchFlight},
	} {
		c.Keys, c.Conns = o.keys, o.conns
		if o.warmup > 0 {
			wc := c
			wc.Duration = o.warmup
			if _, err := t.Run(ctx, wc); err != nil {
				return nil, err
			}
		}
		c.Duration = o.duration
		r, err := t.Run(ctx, c)
		if err != nil {
			return nil, err
		}
		out = append(out, sample{setup: s, batch: c.Batch, res: r})
	}
	return out, nil
}

// startCluster starts s.nodes flux-nodes clustered with routes and waits
// until each counts all of them. It returns their client URLs.
func startCluster(ctx context.Context, o options, s setup) ([]string, func(), error) {
	dir, err := os.MkdirTemp("", "fluxcluster-")
	if err != nil {
		return nil, nil, err
	}
	var nodes []*node.Node
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, n := range nodes {
			_ = n.Shutdown(sctx)
		}
		os.RemoveAll(dir)
	}
	ports, err := freePorts(s.nodes)
	if err != nil {
		stop()
		return nil, nil, err
	}
	var routes node.Routes
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	lc := node.LimiterConfig{Rate: 1e6, Burst: 1e6}
	if s.mode != "local" {
		lc.Mode = s.mode
	}
	var urls []string
	for i := range s.nodes {
		cfg := node.DefaultConfig()
		cfg.NodeID = fmt.Sprintf("n%d", i)
		cfg.NATSListen = "127.0.0.1:-1"
		cfg.HTTPListen = ""
		cfg.DataDir = fmt.Sprintf("%s/n%d", dir, i)
		cfg.Heartbeat = node.Duration(o.heartbeat)
		cfg.Handlers = o.handlers
		if s.nodes > 1 {
			cfg.ClusterListen = fmt.Sprintf("127.0.0.1:%d", ports[i])
			cfg.Routes = routes
		}
		cfg.ClusterSecret = []byte("fluxcluster benchmark secret: loopback only")
		cfg.Limiters = map[string]node.LimiterConfig{limiterName: lc}
		n, err := node.New(cfg, nil)
		if err != nil {
			stop()
			return nil, nil, err
		}
		nodes = append(nodes, n)
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = n.Start(sctx)
		cancel()
		if err != nil {
			stop()
			return nil, nil, err
		}
		urls = append(urls, n.ClientURL())
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.nodes > 1 {
		ok := true
		for _, n := range nodes {
			if co := n.Cluster(); co == nil || co.Members() != s.nodes {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, errors.New("the cluster did not form in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return urls, stop, nil
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// accuracy runs the clustertest harness with issue 6's parameters.
func accuracy(ctx context.Context, o options, w io.Writer) error {
	d := time.Duration(o.accSeconds) * time.Second
	fmt.Fprintf(w, "\naccuracy: %d nodes (Coordinators over embedded NATS servers clustered with routes), %v per run\n", o.nodes, d)
	var errs []error
	for _, cfg := range []clustertest.Config{
		{Nodes: o.nodes, Rate: 200, Burst: 20, Keys: 1, Load: 3, Duration: d},
		{Nodes: o.nodes, Rate: 2, Burst: 4, Keys: o.accKeys, Load: 2, Duration: d, Workers: 64},
	} {
		if _, err := clustertest.Harness(ctx, w, cfg); err != nil {
			errs = append(errs, err)
		}
	}
	r, err := clustertest.Run(ctx, clustertest.Config{Nodes: o.nodes, Mode: cluster.Hybrid, Rate: 20, Burst: 10, Keys: 100, Load: 0.3, Duration: d})
	if err != nil {
		errs = append(errs, err)
	} else {
		clustertest.WriteTable(w, []clustertest.Result{r})
	}
	return errors.Join(errs...)
}
