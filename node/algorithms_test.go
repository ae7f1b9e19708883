package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxlimiter/flux"
)

// algorithmLimiters are one limiter per algorithm, each "3 at once": rate 1
// and burst 2 for the buckets, limit 3 for the window algorithms. Windows
// are a year long (a month for the calendar one) so that no test run
// crosses a window boundary between its checks.
func algorithmLimiters() map[string]LimiterConfig {
	year := Duration(365 * 24 * time.Hour)
	return map[string]LimiterConfig{
		"gcra":     {Rate: 1, Burst: 2},
		"token":    {Algorithm: "token-bucket", Rate: 1, Burst: 2},
		"leaky":    {Algorithm: "leaky-bucket", Rate: 1, Burst: 2},
		"log":      {Algorithm: "sliding-window-log", Limit: 3, Window: year},
		"sliding":  {Algorithm: "sliding-window", Limit: 3, Window: year},
		"fixed":    {Algorithm: "fixed-window", Limit: 3, Window: year},
		"calendar": {Algorithm: "fixed-window", Limit: 3, Calendar: "month", Timezone: "Europe/Paris"},
	}
}

func algorithmsConfig(t testing.TB) Config {
	cfg := testConfig(t)
	cfg.Limiters = algorithmLimiters()
	return cfg
}

// Every algorithm through the node: three admissions, then
// a denial that says when to retry; only the leaky bucket asks to wait.
func TestAlgorithmsThroughNode(t *testing.T) {
	n := startNode(t, algorithmsConfig(t))
	nc := connect(t, n)
	for name := range algorithmLimiters() {
		t.Run(name, func(t *testing.T) {
			var delays []int64
			for i := range 3 {
				r := request(t, nc, SubjectCheck, fmt.Sprintf(`{"limiter":%q,"key":"k"}`, name))
				d := decodeDecision(t, r.data)
				if r.code != 0 || !d.complete() || !*d.Allowed || *d.Limit != 3 || *d.Remaining != int64(2-i) {
					t.Fatalf("check %d = %d %s, want allowed, limit 3, remaining %d", i, r.code, r.data, 2-i)
				}
				delays = append(delays, *d.DelayNS)
			}
			r := request(t, nc, SubjectCheck, fmt.Sprintf(`{"limiter":%q,"key":"k"}`, name))
			d := decodeDecision(t, r.data)
			if r.code != 0 || !d.complete() || *d.Allowed || *d.Remaining != 0 || *d.RetryAfterNS <= 0 {
				t.Fatalf("fourth check = %d %s, want denied with retry_after_ns > 0", r.code, r.data)
			}
			if name != "leaky" {
				if delays[0] != 0 || delays[1] != 0 || delays[2] != 0 {
					t.Fatalf("delay_ns = %v, want 0 for %s", delays, name)
				}
				return
			}
			// The queue of 3 drains at 1/s: act now, in about 1 s, in
			// about 2 s (less the time between the requests, generous
			// on a loaded machine).
			if delays[0] != 0 || delays[1] <= int64(500*time.Millisecond) || delays[1] > int64(time.Second) ||
				delays[2] <= delays[1]+int64(500*time.Millisecond) || delays[2] > int64(2*time.Second) {
				t.Fatalf("leaky-bucket delay_ns = %v, want about 0, 1s, 2s", delays)
			}
		})
	}
	// A cost above a window limiter's capacity is an error, not a denial.
	if r := request(t, nc, SubjectCheck, `{"limiter":"log","key":"other","cost":4}`); r.code != 400 || !strings.Contains(string(r.data), "cost_exceeds_capacity") {
		t.Fatalf("cost 4 on limit 3 = %d %s, want 400 cost_exceeds_capacity", r.code, r.data)
	}
}

// The batch endpoint decides every algorithm in one request; the leaky
// bucket's items of one key are queued in order.
func TestAlgorithmsBatch(t *testing.T) {
	n := startNode(t, algorithmsConfig(t))
	nc := connect(t, n)
	body := `{"requests":[
		{"limiter":"leaky","key":"b"},{"limiter":"leaky","key":"b"},
		{"limiter":"fixed","key":"b","cost":3},{"limiter":"fixed","key":"b"},
		{"limiter":"calendar","key":"b","cost":0},{"limiter":"log","key":"b","cost":2},{"limiter":"sliding","key":"b","cost":3}]}`
	r := request(t, nc, SubjectCheckBatch, body)
	var got struct{ Results []decision }
	if err := json.Unmarshal(r.data, &got); err != nil || r.code != 0 || len(got.Results) != 7 {
		t.Fatalf("batch = %d %s (%v)", r.code, r.data, err)
	}
	res := got.Results
	ok := *res[0].Allowed && *res[0].DelayNS == 0 && *res[1].Allowed && *res[1].DelayNS > int64(900*time.Millisecond) &&
		*res[2].Allowed && *res[2].Remaining == 0 && !*res[3].Allowed && *res[3].RetryAfterNS > 0 &&
		*res[4].Allowed && *res[4].Remaining == 3 && *res[5].Allowed && *res[5].Remaining == 1 &&
		*res[6].Allowed && *res[6].Remaining == 0
	if !ok {
		t.Fatalf("batch results = %s", r.data)
	}
}

func TestLimitersEndpointAlgorithms(t *testing.T) {
	n := startNode(t, algorithmsConfig(t))
	r := request(t, connect(t, n), SubjectLimiters, ``)
	want := `{"limiters":[` +
		`{"name":"calendar","algorithm":"fixed-window","limit":3,"calendar":"month","timezone":"Europe/Paris","capacity":3},` +
		`{"name":"fixed","algorithm":"fixed-window","limit":3,"window":"8760h0m0s","window_ns":31536000000000000,"capacity":3},` +
		`{"name":"gcra","algorithm":"gcra","rate":1,"burst":2,"capacity":3},` +
		`{"name":"leaky","algorithm":"leaky-bucket","rate":1,"burst":2,"capacity":3},` +
		`{"name":"log","algorithm":"sliding-window-log","limit":3,"window":"8760h0m0s","window_ns":31536000000000000,"capacity":3},` +
		`{"name":"sliding","algorithm":"sliding-window","limit":3,"window":"8760h0m0s","window_ns":31536000000000000,"capacity":3},` +
		`{"name":"token","algorithm":"token-bucket","rate":1,"burst":2,"capacity":3}]}`
	if r.code != 0 || string(r.data) != want {
		t.Fatalf("limiters = %d %s\nwant %s", r.code, r.data, want)
	}
}

func TestParseConfigAlgorithms(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
limiters:
  api:      {algorithm: token-bucket, rate: 100, burst: 99}
  out:      {algorithm: leaky-bucket, rate: 50, burst: 9}
  login:    {algorithm: sliding-window-log, limit: 5, window: 1m}
  quota:    {algorithm: sliding-window, limit: 1000, window: 1h}
  hourly:   {algorithm: fixed-window, limit: 10, window: 1h}
  daily:    {algorithm: fixed-window, limit: 1000, calendar: day, timezone: Europe/Paris}
  monthly:  {algorithm: fixed-window, limit: 1000, calendar: month}
`))
	if err != nil {
		t.Fatal(err)
	}
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]flux.Limit{
		"api":     {Algorithm: flux.TokenBucket, Rate: 100, Burst: 99},
		"out":     {Algorithm: flux.LeakyBucket, Rate: 50, Burst: 9},
		"login":   {Algorithm: flux.SlidingWindowLog, Limit: 5, Window: time.Minute},
		"quota":   {Algorithm: flux.SlidingWindow, Limit: 1000, Window: time.Hour},
		"hourly":  {Algorithm: flux.FixedWindow, Limit: 10, Window: time.Hour},
		"daily":   {Algorithm: flux.FixedWindow, Limit: 1000, Calendar: flux.CalendarDay, Location: paris},
		"monthly": {Algorithm: flux.FixedWindow, Limit: 1000, Calendar: flux.CalendarMonth},
	} {
		got, err := cfg.Limiters[name].FluxLimit()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Location != nil && want.Location != nil && got.Location.String() == want.Location.String() {
			got.Location = want.Location // loaded twice: compare by name
		}
		if got != want {
			t.Errorf("%s: FluxLimit = %+v, want %+v", name, got, want)
		}
	}

	for _, tt := range []struct {
		yaml string
		want error
		msg  string
	}{
		{"{algorithm: gcra, rate: 1, limit: 5, window: 1m}", flux.ErrInvalidLimit, "gcra takes Rate and Burst"},
		{"{algorithm: token-bucket, rate: 1, burst: 1, window: 1m}", flux.ErrInvalidWindow, "token-bucket takes Rate and Burst"},
		{"{algorithm: leaky-bucket, limit: 3, window: 1s}", flux.ErrInvalidLimit, "leaky-bucket"},
		{"{algorithm: sliding-window, rate: 1, limit: 3, window: 1s}", flux.ErrInvalidRate, "takes Limit and Window"},
		{"{algorithm: sliding-window-log, limit: 3, window: 1s, burst: 2}", flux.ErrInvalidBurst, "not Burst"},
		{"{algorithm: sliding-window-log, limit: 3}", flux.ErrInvalidWindow, "window"},
		{"{algorithm: fixed-window, window: 1m}", flux.ErrInvalidLimit, "limit"},
		{"{algorithm: sliding-window, limit: 3, calendar: day}", flux.ErrInvalidWindow, "only fixed-window"},
		{"{algorithm: fixed-window, limit: 3, window: 1m, calendar: day}", flux.ErrInvalidWindow, "not both"},
		{"{algorithm: fixed-window, limit: 3, calendar: year}", flux.ErrInvalidWindow, "calendar"},
		{"{algorithm: fixed-window, limit: 3, window: 1h, timezone: Europe/Paris}", flux.ErrInvalidWindow, "timezone is only for fixed-window's calendar windows"},
		{"{algorithm: fixed-window, limit: 3, calendar: day, timezone: Mars/Olympus}", flux.ErrInvalidWindow, "Mars/Olympus"},
		{"{algorithm: fixed-window, limit: 3, calendar: day, timezone: Local}", flux.ErrInvalidWindow, "depends on the machine"},
		{"{algorithm: GCRA, rate: 1}", flux.ErrInvalidAlgorithm, `"GCRA"`},
		{"{algorithm: sliding-log, limit: 3, window: 1s}", flux.ErrInvalidAlgorithm, "sliding-window-log"},
		{"{algorithm: gcra, rate: 1, timezone: UTC}", flux.ErrInvalidWindow, "timezone is only"},
	} {
		_, err := ParseConfig([]byte("limiters:\n  x: " + tt.yaml + "\n"))
		if !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig and %v mentioning %q", tt.yaml, err, tt.want, tt.msg)
		}
	}
}

// syncBuffer is a bytes.Buffer for a logger written from several
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A reload that changes a limiter's algorithm replaces the limiter: its
// keys start afresh, and the log says so. A reload that changes only the
// parameters of the same algorithm re-bases the keys.
func TestReloadAlgorithmChange(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limiters = map[string]LimiterConfig{
		"api":   {Rate: 1, Burst: 2},
		"daily": {Algorithm: "fixed-window", Limit: 5, Calendar: "day"},
	}
	var logs syncBuffer
	n, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(t.Context())
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, n)
	for range 3 {
		request(t, nc, SubjectCheck, `{"limiter":"api","key":"k"}`)
		request(t, nc, SubjectCheck, `{"limiter":"daily","key":"k"}`)
	}
	before, _ := n.Limiter("api")
	dailyBefore, _ := n.Limiter("daily")

	next := cfg
	next.Limiters = map[string]LimiterConfig{
		"api":   {Algorithm: "sliding-window", Limit: 10, Window: Duration(time.Hour)},
		"daily": {Algorithm: "fixed-window", Limit: 4, Calendar: "day", Timezone: "Europe/Paris"},
	}
	if err := n.Reload(next); err != nil {
		t.Fatal(err)
	}
	after, _ := n.Limiter("api")
	if after == before || after.Limit().Algorithm != flux.SlidingWindow || !isClosed(before) {
		t.Fatalf("api after reload: same limiter %v, algorithm %q, old closed %v", after == before, after.Limit().Algorithm, isClosed(before))
	}
	d := decodeDecision(t, request(t, nc, SubjectCheck, `{"limiter":"api","key":"k","cost":0}`).data)
	if !*d.Allowed || *d.Limit != 10 || *d.Remaining != 10 {
		t.Fatalf("api key k after the algorithm change = %s, want a fresh key (limit 10, remaining 10)", jsonOf(d))
	}
	// Same algorithm, another zone and limit: re-based, k keeps its 3.
	if dailyAfter, _ := n.Limiter("daily"); dailyAfter != dailyBefore {
		t.Fatal("daily was replaced although its algorithm did not change")
	}
	d = decodeDecision(t, request(t, nc, SubjectCheck, `{"limiter":"daily","key":"k","cost":0}`).data)
	if *d.Limit != 4 || *d.Remaining != 1 {
		t.Fatalf("daily key k after re-basing = %s, want limit 4, remaining 1", jsonOf(d))
	}
	out := logs.String()
	for _, want := range []string{
		`level=WARN msg="limiter replaced: its algorithm changed, so every key starts afresh with a full allowance" limiter=api from="gcra rate=1/s burst=2" to="sliding-window limit=10 window=1h0m0s" keys_dropped=1`,
		`msg="limiter changed" limiter=daily from="fixed-window limit=5 calendar=day timezone=UTC" to="fixed-window limit=4 calendar=day timezone=Europe/Paris"`,
		`added=0 changed=1 replaced=1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s\nlogs:\n%s", want, out)
		}
	}
	if strings.Contains(out, "limiter removed") {
		t.Errorf("a replaced limiter was logged as removed:\n%s", out)
	}
}

// isClosed reports whether l has been closed.
func isClosed(l *flux.Limiter) bool {
	_, err := l.Peek(context.Background(), "x")
	return errors.Is(err, flux.ErrClosed)
}
