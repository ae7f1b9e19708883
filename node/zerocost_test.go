package node

import (
	"encoding/json"
	"testing"
)

// A batch item without "cost" is a check of cost 1, and "cost": 0 a peek,
// whether the node decides the batch alone or through the cluster
// coordinator: the library reads an unset flux.Request.Cost as 1, so the
// node must spell the wire's peek out (flux.Request.Peek).
func TestBatchWithoutCostCountsOne(t *testing.T) {
	n := startNode(t, testConfig(t)) // "slow": capacity 1
	nc := connect(t, n)
	r := request(t, nc, SubjectCheckBatch, `{"requests":[`+
		`{"limiter":"slow","key":"k","cost":0},`+
		`{"limiter":"slow","key":"k"},`+
		`{"limiter":"slow","key":"k","cost":0},`+
		`{"limiter":"slow","key":"k"}]}`)
	if r.code != 0 {
		t.Fatalf("batch: %d %s", r.code, r.desc)
	}
	var body struct {
		Results []decision `json:"results"`
	}
	if err := json.Unmarshal(r.data, &body); err != nil || len(body.Results) != 4 {
		t.Fatalf("reply %s: %v", r.data, err)
	}
	want := []struct {
		allowed   bool
		remaining int64
	}{{true, 1}, {true, 0}, {false, 0}, {false, 0}}
	for i, w := range want {
		d := body.Results[i]
		if !d.complete() || *d.Allowed != w.allowed || *d.Remaining != w.remaining {
			t.Errorf("item %d: %s; want allowed=%v remaining=%d", i, r.data, w.allowed, w.remaining)
		}
	}
}
