package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestRunSmoke runs every part of the tool briefly against an in-process
// node, gubernator and the echo responder; it checks the report's shape,
// not the figures.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a flux-node and a gubernator daemon")
	}
	var out bytes.Buffer
	err := run(t.Context(), []string{"-runs", "1", "-duration", "300ms", "-warmup", "0", "-keys", "1000", "-batch", "10"}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	for _, want := range []string{
		"round 1  flux-node, 1 key/request", "round 1  gubernator, 10 keys/request", "round 1  nats-echo, 1 key/request",
		"x gubernator", "of the NATS echo ceiling", "at 50% of peak", "target p99 < 1ms",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "ERRORS") {
		t.Errorf("a run had errors")
	}
}

func TestParseBounds(t *testing.T) {
	for _, args := range [][]string{
		{"-duration", "11m"}, {"-runs", "0"}, {"-batch", "1"}, {"-inflight", "0"}, {"-keys", "0"}, {"extra"},
		{"-fractions", "0"}, {"-fractions", "0.5,x"}, {"-fractions", "1.5"},
	} {
		if _, err := parse(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parse(%q) accepted", args)
		}
	}
}
