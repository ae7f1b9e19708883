package node

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"
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
	hc, hb, hl := newHandler(n), newHandler(n), newHandler(n)
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(endpoint string, reply []byte, code int, reason string) {
			switch code {
			case 0:
				var v map[string]any
				if err := json.Unmarshal(reply, &v); err != nil {
					t.Fatalf("%s(%q): reply %q is not JSON: %v", endpoint, data, reply, err)
				}
			case 400, 404, 413:
				if reason == "" {
					t.Fatalf("%s(%q): error %d without a reason", endpoint, data, code)
				}
			default:
				t.Fatalf("%s(%q): unexpected code %d %s", endpoint, data, code, reason)
			}
		}
		reply, e := hc.check(data)
		check("check", reply, e.Code, e.Reason)
		reply, e = hb.batch(data)
		check("check_batch", reply, e.Code, e.Reason)
		if e.Code == 0 {
			var v struct{ Results []json.RawMessage }
			if err := json.Unmarshal(reply, &v); err != nil || v.Results == nil {
				t.Fatalf("check_batch(%q): reply %q has no results", data, reply)
			}
		}
		// A lane worker deciding the input twice at once (no reply subject,
		// so nothing is published).
		hl.checkMany([]*nats.Msg{{Data: data}, {Data: data}})
		// The handlers kept no reference to the payload.
		if hc.item.Key != "" || hc.item.Limiter != "" {
			t.Fatalf("check handler kept the payload's key")
		}
		for _, it := range append(hb.items[:cap(hb.items)], hl.items[:cap(hl.items)]...) {
			if it.Key != "" || it.Limiter != "" {
				t.Fatalf("batch handler kept a payload's key")
			}
		}
	})
}
