package failure_test

import (
	"errors"
	"testing"

	"github.com/fluxlimiter/flux/failure"
)

func TestParseAndString(t *testing.T) {
	for _, p := range []failure.Policy{failure.Local, failure.Open, failure.Closed} {
		got, err := failure.Parse(p.String())
		if err != nil || got != p || !p.Valid() {
			t.Errorf("Parse(%q) = %v, %v; want %v", p.String(), got, err, p)
		}
	}
	if p, err := failure.Parse(""); err != nil || p != failure.Local {
		t.Errorf(`Parse("") = %v, %v; want local (the zero value)`, p, err)
	}
	if _, err := failure.Parse("fail-open"); !errors.Is(err, failure.ErrUnknown) {
		t.Errorf("Parse of an unknown name: %v", err)
	}
	if p := failure.Policy(7); p.Valid() || p.String() != "Policy(7)" {
		t.Errorf("Policy(7): valid %v, %q", p.Valid(), p.String())
	}
}
