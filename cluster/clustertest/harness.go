package clustertest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	flux "github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
	"github.com/fluxlimiter/flux/cluster"
)

// LimiterName is the name of the one limiter a test cluster runs.
const LimiterName = "test"

// ClusterConfig sets up a test cluster. Zero fields take the defaults
// noted.
type ClusterConfig struct {
	// Nodes is the number of nodes, each with its own NATS server (3).
	Nodes int
	// Limit is every node's limit.
	Limit flux.Limit
	// Limiter is the limiter's cluster configuration (mode and so on).
	Limiter cluster.LimiterConfig
	// Heartbeat is the heartbeat interval (200ms: tests and benchmarks
	// should not wait seconds for a cluster to form).
	Heartbeat time.Duration
}

// Node is one node of a test cluster.
type Node struct {
	ID      string
	Conn    *nats.Conn
	Limiter *flux.Limiter
	Coord   *cluster.Coordinator
	down    bool
}

// Cluster is a running test cluster: node i is connected to server i.
type Cluster struct {
	Servers *Servers
	Nodes   []*Node
}

// Start starts the NATS servers and one node per server, each with its own
// connection, limiter and Coordinator, and waits until every node counts
// all the others.
func Start(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 200 * time.Millisecond
	}
	srvs, err := StartServers(cfg.Nodes, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Servers: srvs}
	for i := range cfg.Nodes {
		n, err := startNode(ctx, srvs.URL(i), fmt.Sprintf("node%d", i), cfg)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	if err := c.WaitMembers(ctx, cfg.Nodes, 10*time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// secret is the cluster secret of every harness cluster.
var secret = func() []byte {
	b := make([]byte, bus.MinSecretLen)
	_, _ = rand.Read(b)
	return b
}()

func startNode(ctx context.Context, url, id string, cfg ClusterConfig) (*Node, error) {
	nc, err := nats.Connect(url, nats.Name("flux-"+id), nats.NoReconnect())
	if err != nil {
		return nil, err
	}
	n := &Node{ID: id, Conn: nc}
	b, err := bus.NewNATS(bus.NATSConfig{Conn: nc, Node: id, Security: bus.Security{Secret: secret}})
	if err != nil {
		nc.Close()
		return nil, err
	}
	n.Limiter, err = flux.New(cfg.Limit)
	if err != nil {
		nc.Close()
		return nil, err
	}
	n.Coord, err = cluster.New(b, cluster.Config{Heartbeat: cfg.Heartbeat, JoinWait: min(cfg.Heartbeat, cluster.DefaultJoinWait)})
	if err == nil {
		err = n.Coord.Register(LimiterName, n.Limiter, cfg.Limiter)
	}
	if err == nil {
		err = n.Coord.Start(ctx)
	}
	if err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

func (n *Node) close() {
	if n.Coord != nil {
		_ = n.Coord.Close()
	}
	if n.Limiter != nil {
		_ = n.Limiter.Close()
	}
	n.Conn.Close()
}

// Live returns the nodes not killed.
func (c *Cluster) Live() []*Node {
	var live []*Node
	for _, n := range c.Nodes {
		if !n.down {
			live = append(live, n)
		}
	}
	return live
}

// WaitMembers waits until every live node counts want members.
func (c *Cluster) WaitMembers(ctx context.Context, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, n := range c.Live() {
			if n.Coord.Members() != want {
				ok = false
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clustertest: members did not reach %d in %v", want, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Kill makes node i crash: its connection and its server go away without
// a word to the peers (no leaving heartbeat), then its Coordinator and
// limiter are released.
func (c *Cluster) Kill(i int) {
	n := c.Nodes[i]
	if n.down {
		return
	}
	n.down = true
	n.Conn.Close()
	c.Servers.Kill(i)
	n.close()
}

// Close stops every node and server.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		if !n.down {
			n.down = true
			n.close()
		}
	}
	c.Servers.Shutdown()
}

// Config is one run of the accuracy harness.
type Config struct {
	// Nodes is the number of nodes (3).
	Nodes int
	// Mode is the limiter's mode; Limiter may set the rest of its
	// configuration (its Mode field is overwritten by Mode).
	Mode    cluster.Mode
	Limiter cluster.LimiterConfig
	// Rate and Burst are each key's limit.
	Rate, Burst float64
	// Keys is the number of keys (1).
	Keys int
	// Load is the load offered to each key as a multiple of Rate (3),
	// spread evenly over the nodes.
	Load float64
	// Duration is how long the load lasts (2s).
	Duration time.Duration
	// Workers is the number of concurrent checks per node (8).
	Workers int
	// Heartbeat is the heartbeat interval (200ms).
	Heartbeat time.Duration
}

// Result is what a run measured.
type Result struct {
	Mode     cluster.Mode
	Nodes    int
	Keys     int
	Load     float64
	Elapsed  time.Duration
	Checks   int64 // checks answered
	Errors   int64 // checks that failed
	Admitted int64 // checks admitted, all keys
	// Bound is Σ over keys of Rate×Elapsed + floor(Burst) + 1: what one
	// exact limiter would admit at most.
	Bound float64
	// Ratio is Admitted/Bound; MaxKeyRatio the worst key's ratio.
	Ratio, MaxKeyRatio float64
	// P50 and P99 are check latencies as the caller sees them.
	P50, P99 time.Duration
	// Paths counts answers by cluster.Path.
	Paths [3]int64
}

// LocalShare is the share of checks answered without a network hop.
func (r Result) LocalShare() float64 {
	if r.Checks == 0 {
		return 0
	}
	return float64(r.Paths[cluster.PathLocal]) / float64(r.Checks)
}

func (c *Config) setDefaults() error {
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Keys == 0 {
		c.Keys = 1
	}
	if c.Load == 0 {
		c.Load = 3
	}
	if c.Duration == 0 {
		c.Duration = 2 * time.Second
	}
	if c.Workers == 0 {
		c.Workers = 8
	}
	if c.Rate <= 0 || c.Burst < 0 || c.Nodes < 1 || c.Keys < 1 || c.Load <= 0 {
		return fmt.Errorf("clustertest: unusable config %+v", *c)
	}
	return nil
}

// Run starts a fresh cluster, offers the load and measures what the
// cluster admitted.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return Result{}, err
	}
	lc := cfg.Limiter
	lc.Mode = cfg.Mode
	c, err := Start(ctx, ClusterConfig{Nodes: cfg.Nodes, Limit: flux.Limit{Rate: cfg.Rate, Burst: cfg.Burst}, Limiter: lc, Heartbeat: cfg.Heartbeat})
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	return c.Offer(ctx, cfg)
}

// recorder collects what the workers of one run saw.
type recorder struct {
	admitted []atomic.Int64 // per key
	paths    [3]atomic.Int64
	checks   atomic.Int64
	errors   atomic.Int64
	mu       sync.Mutex
	lat      []time.Duration
	firstErr atomic.Pointer[error]
}

// Offer runs cfg's load against the live nodes of c and measures it. The
// cluster must be fresh for the bound to hold (keys start idle).
func (c *Cluster) Offer(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return Result{}, err
	}
	live := c.Live()
	keys := make([]string, cfg.Keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	rec := &recorder{admitted: make([]atomic.Int64, cfg.Keys)}
	perNode := cfg.Load * cfg.Rate * float64(cfg.Keys) / float64(len(live))
	start := time.Now()
	var wg sync.WaitGroup
	for j, n := range live {
		wg.Go(func() { drive(ctx, n, j*cfg.Keys/len(live), perNode, cfg, keys, rec, start) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	if p := rec.firstErr.Load(); p != nil && rec.checks.Load() == 0 {
		return Result{}, fmt.Errorf("clustertest: every check failed: %w", *p)
	}
	r := Result{
		Mode: cfg.Mode, Nodes: len(live), Keys: cfg.Keys, Load: cfg.Load, Elapsed: elapsed,
		Checks: rec.checks.Load(), Errors: rec.errors.Load(),
	}
	perKey := cfg.Rate*elapsed.Seconds() + math.Floor(cfg.Burst) + 1
	r.Bound = perKey * float64(cfg.Keys)
	for i := range rec.admitted {
		a := rec.admitted[i].Load()
		r.Admitted += a
		r.MaxKeyRatio = max(r.MaxKeyRatio, float64(a)/perKey)
	}
	r.Ratio = float64(r.Admitted) / r.Bound
	for i := range r.Paths {
		r.Paths[i] = rec.paths[i].Load()
	}
	slices.Sort(rec.lat)
	if n := len(rec.lat); n > 0 {
		r.P50, r.P99 = rec.lat[n/2], rec.lat[min(n*99/100, n-1)]
	}
	return r, nil
}

// drive offers rate checks per second to node n for cfg.Duration, cycling
// over keys from offset, with cfg.Workers checks in flight at most.
func drive(ctx context.Context, n *Node, offset int, rate float64, cfg Config, keys []string, rec *recorder, start time.Time) {
	jobs := make(chan int, 4096)
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Go(func() {
			var lat []time.Duration
			for k := range jobs {
				t0 := time.Now()
				a, err := n.Coord.Check(ctx, LimiterName, keys[k], 1)
				d := time.Since(t0)
				if err != nil {
					rec.errors.Add(1)
					rec.firstErr.CompareAndSwap(nil, &err)
					continue
				}
				lat = append(lat, d)
				rec.checks.Add(1)
				rec.paths[a.Path].Add(1)
				if a.Allowed {
					rec.admitted[k].Add(1)
				}
			}
			rec.mu.Lock()
			rec.lat = append(rec.lat, lat...)
			rec.mu.Unlock()
		})
	}
	issued := 0
	for ctx.Err() == nil {
		el := time.Since(start)
		if el >= cfg.Duration {
			break
		}
		for due := int(rate*el.Seconds()) + 1 - issued; due > 0; due-- {
			jobs <- (offset + issued) % len(keys)
			issued++
		}
		time.Sleep(time.Millisecond)
	}
	close(jobs)
	wg.Wait()
}

// Harness runs every mode of modes with cfg and writes the table to w.
func Harness(ctx context.Context, w io.Writer, cfg Config, modes ...cluster.Mode) ([]Result, error) {
	if len(modes) == 0 {
		modes = []cluster.Mode{cluster.Local, cluster.BestEffort, cluster.Strict, cluster.Hybrid}
	}
	var rs []Result
	var errs []error
	for _, m := range modes {
		cfg.Mode = m
		r, err := Run(ctx, cfg)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m, err))
			continue
		}
		rs = append(rs, r)
	}
	WriteTable(w, rs)
	return rs, errors.Join(errs...)
}

// WriteTable writes results as an aligned table.
func WriteTable(w io.Writer, rs []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tnodes\tkeys\tload\tseconds\tchecks\tadmitted\tbound\tadmitted/bound\tworst key\tp50\tp99\tno hop\tfallback\terrors\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1fx\t%.2f\t%d\t%d\t%.0f\t%.4f\t%.4f\t%v\t%v\t%.1f%%\t%d\t%d\t\n",
			r.Mode, r.Nodes, r.Keys, r.Load, r.Elapsed.Seconds(), r.Checks, r.Admitted, r.Bound, r.Ratio, r.MaxKeyRatio,
			r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), 100*r.LocalShare(), r.Paths[cluster.PathFallback], r.Errors)
	}
	_ = tw.Flush()
}
