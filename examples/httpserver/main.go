// Command httpserver is a small HTTP API protected by Flux: every client IP
// may make 5 requests per second with bursts of 10, POST /login allows 3
// attempts per minute, /healthz is never limited, and /metrics serves the
// limiters' Prometheus metrics.
//
//	go run ./examples/httpserver
//	curl -i http://127.0.0.1:8080/hello
//	for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:8080/hello; done
//	curl -s http://127.0.0.1:8080/metrics | grep flux_decisions_total
//
// Behind a reverse proxy, pass its address with -trusted-proxy so that the
// client address it forwards in X-Forwarded-For is believed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/httplimit"
	"github.com/fluxlimiter/flux/metrics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "httpserver:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. If ready is not nil it receives the address
// the server listens on.
func run(ctx context.Context, args []string, stdout io.Writer, ready chan<- string) error {
	fs := flag.NewFlagSet("httpserver", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	rate := fs.Float64("rate", 5, "requests per second per client")
	burst := fs.Float64("burst", 9, "extra requests a client may burst (capacity is burst+1)")
	var trusted []netip.Prefix
	fs.Func("trusted-proxy", "address or CIDR of a reverse proxy whose X-Forwarded-For is believed (repeatable)", func(s string) error {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, err2 := netip.ParseAddr(s)
			if err2 != nil {
				return err
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		trusted = append(trusted, p)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stdout, nil))

	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		return err
	}
	api, err := flux.New(flux.Limit{Rate: *rate, Burst: *burst}, flux.WithHooks(m.Hooks("api")))
	if err != nil {
		return err
	}
	defer api.Close()
	login, err := flux.New(flux.Limit{Rate: 1.0 / 20, Burst: 2}, flux.WithHooks(m.Hooks("login")))
	if err != nil {
		return err
	}
	defer login.Close()
	m.Track("api", api)
	m.Track("login", login)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "welcome")
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	limit := httplimit.Middleware(api,
		httplimit.WithName("api"),
		httplimit.WithRoute("POST /login", "login", login),
		httplimit.WithExcludedPaths("/healthz", "/metrics"),
		httplimit.WithTrustedProxies(trusted...),
		httplimit.WithLogger(log),
	)
	srv := &http.Server{Handler: limit(mux), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s (change it with -listen): %w", *addr, err)
	}
	log.Info("listening", "addr", ln.Addr().String(),
		"try", "curl -i http://"+ln.Addr().String()+"/hello",
		"trusted_proxies", strings.Trim(fmt.Sprint(trusted), "[]"))
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
