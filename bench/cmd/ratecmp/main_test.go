package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunSmoke(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"-rounds", "1", "-benchtime", "20ms", "-mem-keys", "10000"}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	for _, want := range []string{"memory: 10000 idle keys", "round 1: x/time/rate", "faster per key than x/time/rate", "machine anchor", "the design's times"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
