package node

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
)

// FuzzHandler feeds arbitrary payloads to the check and check_batch
// handlers of a node (its limiters are real; NATS is not needed to decode
// and decide). No input may panic or hang the node; every input gets
// either a well-formed reply or an error with a documented code.
func FuzzHandler(f *testing.F) {
	for _, s := range []string{
		`{"limiter":"api","key":"alice","cost":1}`,
		`{"limiter":"slow","key":"bob","cost":0}`,
		`{"limiter":"api","key":"a\u0000\ud83d\ude00","cost":21}`,
		`{"limiter":"nope","key":"x"}`,
		`{"requests":[{"limiter":"api","key":"a"},{"limiter":"nope","key":"b"},{"key":""},{"limiter":"api","key":"a","cost":-1}]}`,
		`{"requests":[]}`,
	} {
		f.Add([]byte(s))
	}
	cfg := testConfig(f)
	cfg.MaxKeyLen = 32
	cfg.MaxBatch = 64
	cfg.MaxPayload = 4096
	n, err := New(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Shutdown(context.Background()) })
	hc, hb := newHandler(n, kindCheck), newHandler(n, kindBatch)
	h1, h2 := newHandler(n, kindCheck), newHandler(n, kindCheck)
	rc, rb, r1, r2 := &fakeRequest{}, &fakeRequest{}, &fakeRequest{}, &fakeRequest{}
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(endpoint string, r *fakeRequest) {
			if r.replied != 1 {
				t.Fatalf("%s(%q): %d replies", endpoint, data, r.replied)
			}
			r.replied = 0
			var v struct {
				Error *struct{ Reason string }
			}
			if err := json.Unmarshal(r.body, &v); err != nil {
				t.Fatalf("%s(%q): reply %q is not JSON: %v", endpoint, data, r.body, err)
			}
			switch r.code {
			case "":
			case "400", "404", "413":
				if v.Error == nil || v.Error.Reason == "" {
					t.Fatalf("%s(%q): error %s without a reason: %s", endpoint, data, r.code, r.body)
				}
			default:
				t.Fatalf("%s(%q): unexpected code %s %s", endpoint, data, r.code, r.body)
			}
		}
		rc.data, rb.data, r1.data, r2.data = data, data, data, data
		hc.Handle(rc)
		check("check", rc)
		hb.Handle(rb)
		check("check_batch", rb)
		if rb.code == "" {
			var v struct{ Results []json.RawMessage }
			if err := json.Unmarshal(rb.body, &v); err != nil || v.Results == nil {
				t.Fatalf("check_batch(%q): reply %q has no results", data, rb.body)
			}
		}
		// Two requests at once, which the coalescer may decide together.
		var wg sync.WaitGroup
		wg.Go(func() { h1.Handle(r1) })
		wg.Go(func() { h2.Handle(r2) })
		wg.Wait()
		check("check", r1)
		check("check", r2)
		// The handlers kept no reference to the payload.
		for _, h := range []*handler{hc, hb, h1, h2} {
			for _, it := range h.items[:cap(h.items)] {
				if it.Key != "" || it.Limiter != "" {
					t.Fatalf("handler kept a payload's key")
				}
			}
		}
	})
}
