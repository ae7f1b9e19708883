// Package clustertest starts real Flux clusters in one process (embedded
// NATS servers clustered with routes, one Coordinator per server) and
// measures them: the accuracy harness of issue 6, callable from tests and
// from bench/.
package clustertest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Servers is a cluster of embedded NATS servers on loopback, every one
// given the same full route list, as flux-node's --routes would be.
type Servers struct {
	Servers []*server.Server
	alive   []bool
}

// FreePorts returns n loopback ports that are free now, for servers that
// must be told their port before they start, such as route ports every
// peer lists. They are drawn below the kernel's usual ephemeral range
// (32768 and up), from which every ":0" listener and every outgoing
// connection takes its port, so that nothing else in a test run takes one
// before its server binds it. (With ports from ":0" a node in a CI run
// once waited 30 s for its route listener.) A port can still be taken by
// a program that binds fixed ports; the server then fails to start.
func FreePorts(n int) ([]int, error) {
	const lo, hi = 20000, 32000
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			return nil, fmt.Errorf("clustertest: no free loopback port in [%d, %d) after 1000 tries", lo, hi)
		}
		port := lo + rand.IntN(hi-lo)
		if slices.Contains(ports, port) {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use
		}
		_ = l.Close()
		ports = append(ports, port)
	}
	return ports, nil
}

// StartServers starts n NATS servers (client ports chosen by the system,
// never 4222) and waits until each has a route to every other.
func StartServers(n int, timeout time.Duration) (*Servers, error) {
	if n < 1 {
		return nil, fmt.Errorf("clustertest: %d servers", n)
	}
	ports, err := FreePorts(n)
	if err != nil {
		return nil, err
	}
	urls := make([]string, n)
	for i, p := range ports {
		urls[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	routes := server.RoutesFromStr(strings.Join(urls, ","))
	s := &Servers{}
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("flux-test-%d", i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			NoLog:      true,
			NoSigs:     true,
		}
		if n > 1 {
			opts.Cluster = server.ClusterOpts{Name: "flux-test", Host: "127.0.0.1", Port: ports[i], PoolSize: -1}
			opts.Routes = routes
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			s.Shutdown()
			return nil, err
		}
		go srv.Start()
		s.Servers = append(s.Servers, srv)
		s.alive = append(s.alive, true)
	}
	deadline := time.Now().Add(timeout)
	for _, srv := range s.Servers {
		if !srv.ReadyForConnections(time.Until(deadline)) {
			s.Shutdown()
			return nil, errors.New("clustertest: a server did not start")
		}
	}
	for _, srv := range s.Servers {
		for srv.NumRoutes() < n-1 {
			if time.Now().After(deadline) {
				s.Shutdown()
				return nil, fmt.Errorf("clustertest: %s has %d routes, want %d", srv.Name(), srv.NumRoutes(), n-1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return s, nil
}

// URL returns the client URL of server i.
func (s *Servers) URL(i int) string { return s.Servers[i].ClientURL() }

// Kill shuts server i down, as when its flux-node process dies.
func (s *Servers) Kill(i int) {
	if s.alive[i] {
		s.alive[i] = false
		s.Servers[i].Shutdown()
		s.Servers[i].WaitForShutdown()
	}
}

// Shutdown stops every server still running and waits for them.
func (s *Servers) Shutdown() {
	for i := range s.Servers {
		s.Kill(i)
	}
}
