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
	wc, pub := pipelineOf(n, kindCheck)
	wb := newWorker(n, &door{kind: kindBatch, subject: SubjectCheckBatch, name: "check_batch"})
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(endpoint string, r fakeReply) {
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
		wc.serve([]*nats.Msg{msg(kindCheck, data)})
		check("check", pub.last())
		wb.serve([]*nats.Msg{msg(kindBatch, data)})
		r := pub.last()
		check("check_batch", r)
		if r.code == "" {
			var v struct{ Results []json.RawMessage }
			if err := json.Unmarshal(r.body, &v); err != nil || v.Results == nil {
				t.Fatalf("check_batch(%q): reply %q has no results", data, r.body)
			}
		}
		// Three requests decided together, with a valid one between.
		wc.serve([]*nats.Msg{msg(kindCheck, data), msg(kindCheck, []byte(`{"limiter":"api","key":"k"}`)), msg(kindCheck, data)})
		if pub.n != 3 {
			t.Fatalf("%d replies to 3 requests", pub.n)
		}
		for _, r := range pub.replies[:3] {
			check("check", r)
		}
		pub.n = 0
		// The workers kept no reference to the payload.
		for _, w := range []*worker{wc, wb} {
			for _, h := range w.slots {
				for _, it := range h.items[:cap(h.items)] {
					if it.Key != "" || it.Limiter != "" {
						t.Fatalf("handler kept a payload's key")
					}
				}
			}
		}

	})
}
