package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fluxlimiter/flux"
)

func TestDecodeCheck(t *testing.T) {
	tests := []struct {
		in      string
		want    Item
		wantErr bool
	}{
		{in: `{"limiter":"api","key":"alice","cost":1}`, want: Item{Limiter: "api", Key: "alice", Cost: 1, HasLimiter: true, HasKey: true}},
		{in: ` { "key" : "bob" , "limiter":"a" } `, want: Item{Limiter: "a", Key: "bob", Cost: 1, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"k","cost":0}`, want: Item{Limiter: "a", Key: "k", Cost: 0, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"k","cost":null}`, want: Item{Limiter: "a", Key: "k", Cost: 1, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"k","cost":7,"extra":{"x":[1,2,{"y":null}]},"z":true}`, want: Item{Limiter: "a", Key: "k", Cost: 7, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"a\"b\\c\u00e9\ud83d\ude00/\n"}`, want: Item{Limiter: "a", Key: "a\"b\\cé😀/\n", Cost: 1, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"\ud800x"}`, want: Item{Limiter: "a", Key: "\ufffdx", Cost: 1, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"k","key":"last"}`, want: Item{Limiter: "a", Key: "last", Cost: 1, HasLimiter: true, HasKey: true}},
		{in: `{}`, want: Item{Cost: 1}},
		{in: `{"limiter":"a","key":""}`, want: Item{Limiter: "a", Cost: 1, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":5}`, want: Item{Limiter: "a", Cost: 1, HasLimiter: true, Reason: ReasonInvalidRequest, Desc: "key must be a string"}},
		{in: `{"limiter":"a","key":"k","cost":-1}`, want: Item{Limiter: "a", Key: "k", Cost: 1, HasLimiter: true, HasKey: true, Reason: ReasonInvalidCost, Desc: "cost must not be negative"}},
		{in: `{"limiter":"a","key":"k","cost":1.5}`, want: Item{Limiter: "a", Key: "k", Cost: 1, HasLimiter: true, HasKey: true, Reason: ReasonInvalidCost, Desc: "cost must be an integer between 0 and the limiter's capacity"}},
		{in: `{"limiter":"a","key":"k","cost":1.0}`, want: Item{Limiter: "a", Key: "k", Cost: 1, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"k","cost":1e0}`, want: Item{Limiter: "a", Key: "k", Cost: 1, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"k","cost":2.50E1}`, want: Item{Limiter: "a", Key: "k", Cost: 25, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"k","cost":300e-2}`, want: Item{Limiter: "a", Key: "k", Cost: 3, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"k","cost":0.0e+5}`, want: Item{Limiter: "a", Key: "k", Cost: 0, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"k","cost":0e999999999999}`, want: Item{Limiter: "a", Key: "k", Cost: 0, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"k","cost":1.0000000000000000001}`, want: Item{Limiter: "a", Key: "k", Cost: 1, HasLimiter: true, HasKey: true, Reason: ReasonInvalidCost, Desc: "cost must be an integer between 0 and the limiter's capacity"}},
		{in: `{"limiter":"a","key":"k","cost":15e-1}`, want: Item{Limiter: "a", Key: "k", Cost: 1, HasLimiter: true, HasKey: true, Reason: ReasonInvalidCost, Desc: "cost must be an integer between 0 and the limiter's capacity"}},
		{in: `{"limiter":"a","key":"k","cost":1e19}`, want: Item{Limiter: "a", Key: "k", Cost: 1, HasLimiter: true, HasKey: true, Reason: ReasonInvalidCost, Desc: "cost must be an integer between 0 and the limiter's capacity"}},
		{in: `{"limiter":"a","key":"k","cost":9.223372036854775807e18}`, want: Item{Limiter: "a", Key: "k", Cost: 9223372036854775807, HasLimiter: true, HasKey: true}},
		{in: `{"limiter":"a","key":"k","cost":-2.0}`, want: Item{Limiter: "a", Key: "k", Cost: 1, HasLimiter: true, HasKey: true, Reason: ReasonInvalidCost, Desc: "cost must not be negative"}},
		{in: `{"limiter":"a","key":"k","cost":99999999999999999999}`, want: Item{Limiter: "a", Key: "k", Cost: 1, HasLimiter: true, HasKey: true, Reason: ReasonInvalidCost, Desc: "cost must be an integer between 0 and the limiter's capacity"}},
		{in: `{"limiter":"a","key":"k","cost":"1"}`, want: Item{Limiter: "a", Key: "k", Cost: 1, HasLimiter: true, HasKey: true, Reason: ReasonInvalidCost, Desc: "cost must be an integer"}},
		{in: ``, wantErr: true},
		{in: `[]`, wantErr: true},
		{in: `{"key":"k"`, wantErr: true},
		{in: `{"key":"k"} x`, wantErr: true},
		{in: `{"key":"k",}`, wantErr: true},
		{in: `{"key":"a` + "\x01" + `"}`, wantErr: true},
		{in: `{"key":"\x"}`, wantErr: true},
		{in: `{"key":"\u12"}`, wantErr: true},
		{in: `{"cost":01}`, wantErr: true},
		{in: `{"cost":-}`, wantErr: true},
		{in: `{"cost":1.}`, wantErr: true},
		{in: `{"x":tru}`, wantErr: true},
		{in: `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, wantErr: true},
		{in: `{key:"k"}`, wantErr: true},
	}
	for _, tt := range tests {
		var it Item
		err := DecodeCheck([]byte(tt.in), &it)
		if tt.wantErr {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("DecodeCheck(%q) = %v, want ErrMalformed", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("DecodeCheck(%q): %v", tt.in, err)
			continue
		}
		if it != tt.want {
			t.Errorf("DecodeCheck(%q) = %+v, want %+v", tt.in, it, tt.want)
		}
	}
}

func TestDecodeBatch(t *testing.T) {
	in := `{"requests":[{"limiter":"a","key":"x"},{"limiter":"b","key":"y","cost":2},{"key":7}], "other": 1}`
	items, err := DecodeBatch([]byte(in), nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 3 || items[0].Key != "x" || items[1].Limiter != "b" || items[1].Cost != 2 || items[2].Reason != ReasonInvalidRequest {
		t.Fatalf("items = %+v", items)
	}
	if _, err := DecodeBatch([]byte(in), items, 2); !errors.Is(err, ErrTooMany) {
		t.Fatalf("max 2: err = %v, want ErrTooMany", err)
	}
	for _, bad := range []string{`{}`, `{"requests":{}}`, `{"requests":null}`, `{"requests":[1]}`, `{"requests":[{}]`, `[]`} {
		if _, err := DecodeBatch([]byte(bad), nil, 10); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeBatch(%q) = %v, want ErrMalformed", bad, err)
		}
	}
	items, err = DecodeBatch([]byte(`{"requests":[]}`), items, 10)
	if err != nil || len(items) != 0 {
		t.Fatalf("empty batch: %v, %d items", err, len(items))
	}
}

func TestDecisionRoundTrip(t *testing.T) {
	ds := []flux.Decision{
		{Allowed: true, Limit: 21, Remaining: 20, ResetAfter: 10 * time.Millisecond},
		{Allowed: false, Limit: 1, Remaining: 0, RetryAfter: 500 * time.Millisecond, ResetAfter: time.Second, Delay: 3},
	}
	for _, d := range ds {
		b := AppendDecision(nil, d)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		for _, f := range []string{"allowed", "limit", "remaining", "retry_after_ns", "reset_after_ns", "delay_ns"} {
			if _, ok := m[f]; !ok {
				t.Errorf("%s lacks %q", b, f)
			}
		}
		got, err := DecodeDecision(b)
		if err != nil || got != d {
			t.Errorf("DecodeDecision(%s) = %+v, %v; want %+v", b, got, err, d)
		}
	}
	want := `{"allowed":true,"limit":21,"remaining":20,"retry_after_ns":0,"reset_after_ns":10000000,"delay_ns":0}`
	if got := string(AppendDecision(nil, ds[0])); got != want {
		t.Errorf("AppendDecision = %s, want %s", got, want)
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\s", "ctl\x00\x1f\n\r\t", "é😀", "bad\xffutf8", "\u2028"} {
		b := AppendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("AppendString(%q) = %s: %v", s, b, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if got != want {
			t.Errorf("AppendString(%q) round trip = %q, want %q", s, got, want)
		}
	}
}

func TestErrorAndResults(t *testing.T) {
	e := ErrorBody{Code: 404, Reason: ReasonUnknownLimiter, Description: `unknown limiter "x"`}
	b := AppendErrorReply(nil, e)
	got, ok := DecodeErrorReply(b)
	if !ok || got != e {
		t.Fatalf("DecodeErrorReply(%s) = %+v, %v", b, got, ok)
	}
	if _, ok := DecodeErrorReply([]byte(`{"allowed":true}`)); ok {
		t.Fatal("DecodeErrorReply found an error in a decision")
	}
	d := flux.Decision{Allowed: true, Limit: 3, Remaining: 2}
	reply := []byte(`{"results":[` + string(AppendDecision(nil, d)) + `,` + string(b) + `]}`)
	var seen []string
	err := DecodeResults(reply, func(i int, got flux.Decision, ge *ErrorBody) {
		switch {
		case ge != nil:
			seen = append(seen, fmt.Sprintf("%d:err:%d:%s", i, ge.Code, ge.Reason))
		default:
			if got != d {
				t.Errorf("result %d = %+v, want %+v", i, got, d)
			}
			seen = append(seen, fmt.Sprintf("%d:ok", i))
		}
	})
	if err != nil || strings.Join(seen, ",") != "0:ok,1:err:404:unknown_limiter" {
		t.Fatalf("DecodeResults: %v, %v", seen, err)
	}
	check := AppendCheck(nil, "api", "al\"ice", 3)
	var it Item
	if err := DecodeCheck(check, &it); err != nil || it.Limiter != "api" || it.Key != "al\"ice" || it.Cost != 3 {
		t.Fatalf("AppendCheck round trip: %+v, %v", it, err)
	}
}

func TestDecodeCheckAllocs(t *testing.T) {
	data := []byte(`{"limiter":"api","key":"alice-123456","cost":1}`)
	var it Item
	allocs := testing.AllocsPerRun(100, func() {
		if err := DecodeCheck(data, &it); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("DecodeCheck allocates %v times, want 0", allocs)
	}
}

// checkAgainstStdlib holds DecodeCheck to encoding/json: whatever it accepts
// is valid JSON and decodes to the same fields, and whatever valid JSON
// object (within MaxDepth) it is given, it accepts.
func checkAgainstStdlib(t *testing.T, data []byte) {
	var it Item
	err := DecodeCheck(data, &it)
	valid := json.Valid(data)
	if err == nil && !valid {
		t.Fatalf("DecodeCheck accepted invalid JSON %q", data)
	}
	if err != nil && !errors.Is(err, ErrMalformed) {
		t.Fatalf("DecodeCheck(%q) error %v does not wrap ErrMalformed", data, err)
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil || m == nil {
		return // not an object
	}
	if err != nil {
		if depth(data) <= MaxDepth {
			t.Fatalf("DecodeCheck rejected valid object %q: %v", data, err)
		}
		return
	}
	if !utf8.Valid(data) {
		return // encoding/json rewrites invalid UTF-8; we keep bytes
	}
	for name, dst := range map[string]*string{"key": &it.Key, "limiter": &it.Limiter} {
		raw, ok := m[name]
		var s string
		if ok && json.Unmarshal(raw, &s) == nil && s != *dst {
			t.Fatalf("%q: %s = %q, encoding/json says %q", data, name, *dst, s)
		}
	}
	if raw, ok := m["cost"]; ok && it.Reason == "" && string(raw) != "null" {
		var n int64
		if json.Unmarshal(raw, &n) == nil && n >= 0 && n != it.Cost {
			t.Fatalf("%q: cost = %d, encoding/json says %d", data, it.Cost, n)
		}
	}
	// An integral value in float notation: math/big's exact rational
	// agrees (exponents kept small, which math/big would expand).
	if raw, ok := m["cost"]; ok && string(raw) != "null" && len(raw) < 64 && !hugeExponent(string(raw)) {
		if r, ok := new(big.Rat).SetString(string(raw)); ok {
			integral := r.IsInt() && r.Num().IsInt64() && r.Num().Int64() >= 0
			switch {
			case integral && it.Reason != "" && it.Reason != ReasonInvalidRequest:
				t.Fatalf("%q: integral cost %v refused: %s", data, r, it.Desc)
			case integral && it.Reason == "" && r.Num().Int64() != it.Cost:
				t.Fatalf("%q: cost = %d, math/big says %v", data, it.Cost, r)
			case !integral && it.Reason == "":
				t.Fatalf("%q: cost %v accepted as %d", data, r, it.Cost)
			}
		}
	}
}

// hugeExponent reports whether a JSON number has an exponent of more than
// three digits.
func hugeExponent(num string) bool {
	i := strings.IndexAny(num, "eE")
	return i >= 0 && len(strings.TrimLeft(num[i+1:], "+-0")) > 3
}

// depth is the nesting depth of a JSON document, ignoring strings.
func depth(data []byte) int {
	d, maxD, inStr := 0, 0, false
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case !inStr && (c == '{' || c == '['):
			d++
			maxD = max(maxD, d)
		case !inStr && (c == '}' || c == ']'):
			d--
		}
	}
	return maxD
}

func FuzzDecodeCheck(f *testing.F) {
	for _, s := range []string{
		`{"limiter":"api","key":"alice","cost":1}`,
		`{"limiter":"api","key":"a\u00e9\ud83d\ude00","cost":0,"x":[{"y":null},true,-1.5e3]}`,
		`{"key":"","cost":-1}`,
		`{"cost":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(checkAgainstStdlib)
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"requests":[{"limiter":"api","key":"alice"},{"limiter":"x","key":"b","cost":2}]}`))
	f.Add([]byte(`{"requests":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		items, err := DecodeBatch(data, nil, 50)
		if err == nil {
			if !json.Valid(data) {
				t.Fatalf("DecodeBatch accepted invalid JSON %q", data)
			}
			var m map[string]json.RawMessage
			var reqs []json.RawMessage
			if json.Unmarshal(data, &m) == nil && json.Unmarshal(m["requests"], &reqs) == nil && len(reqs) != len(items) {
				t.Fatalf("%q: %d items, encoding/json sees %d", data, len(items), len(reqs))
			}
		} else if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooMany) {
			t.Fatalf("DecodeBatch(%q): unexpected error %v", data, err)
		}
	})
}
