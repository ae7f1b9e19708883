package httplimit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/httplimit"
)

// Middleware limits each client address to a Limit and answers with the
// RateLimit header fields; a denial is a 429 with Retry-After.
func ExampleMiddleware() {
	l, err := flux.New(flux.Limit{Rate: 1, Burst: 1}, flux.WithClock(clock.NewManual(time.Unix(0, 0))))
	if err != nil {
		panic(err)
	}
	defer l.Close()

	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello") })
	h := httplimit.Middleware(l, httplimit.WithName("api"), httplimit.WithExcludedPaths("/healthz"))(hello)

	for _, path := range []string{"/a", "/b", "/c", "/healthz"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "192.0.2.7:51000"
		h.ServeHTTP(rec, req)
		fmt.Printf("%s %d RateLimit=%q Retry-After=%q\n", path, rec.Code, rec.Header().Get("RateLimit"), rec.Header().Get("Retry-After"))
	}
	// Output:
	// /a 200 RateLimit="\"api\";r=1;t=1" Retry-After=""
	// /b 200 RateLimit="\"api\";r=0;t=2" Retry-After=""
	// /c 429 RateLimit="\"api\";r=0;t=2" Retry-After="1"
	// /healthz 200 RateLimit="" Retry-After=""
}
