// Quickstart limits each client of an HTTP server to 10 requests per
// second, with bursts of 6. It is the README's quick start, verbatim.
package main

import (
	"log"
	"math"
	"net"
	"net/http"
	"strconv"

	"github.com/fluxlimiter/flux"
)

func main() {
	limiter, err := flux.New(flux.Limit{Rate: 10, Burst: 5}) // 10/s, 6 at once after idle
	if err != nil {
		log.Fatal(err)
	}
	defer limiter.Close()

	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		client, _, _ := net.SplitHostPort(r.RemoteAddr) // the key: one limit per client
		d, err := limiter.Check(r.Context(), client)
		switch {
		case err != nil: // invalid key, closed limiter, overload, clock failure
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case !d.Allowed:
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.RetryAfter.Seconds()))))
			http.Error(w, "slow down", http.StatusTooManyRequests)
		default:
			w.Write([]byte("hello\n"))
		}
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", nil))
}
