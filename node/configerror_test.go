package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigTypos: an unknown key names the file, the line and the valid
// key nearest to it, on one line, without the decoder's Go type names.
func TestConfigTypos(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flux.yaml")
	doc := "nats_listne: 127.0.0.1:4222\nlimiters:\n  api:\n    rate: 10\n    brust: 5\n    store_falure: open\n    zzzzzz: 1\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ReadConfig(path)
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		path + `:1: unknown top-level setting "nats_listne" (did you mean nats_listen?)`,
		path + `:5: unknown limiter setting "brust" (did you mean burst?)`,
		path + `:6: unknown limiter setting "store_falure" (did you mean store_failure?)`,
		path + `:7: unknown limiter setting "zzzzzz"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "zzzzzz\" (did you mean") {
		t.Errorf("a key far from every valid one got a suggestion: %s", msg)
	}
	if strings.Contains(msg, "\n") || strings.Contains(msg, "node.LimiterConfig") {
		t.Errorf("want one line without Go type names: %q", msg)
	}
	if _, err := ParseConfig([]byte("limiters:\n  api: {rate: 1, burts: 2}\n")); err == nil ||
		!strings.Contains(err.Error(), `line 2: unknown limiter setting "burts" (did you mean burst?)`) {
		t.Errorf("ParseConfig: %v", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		d    int
	}{{"brust", "burst", 1}, {"burst", "burst", 0}, {"", "abc", 3}, {"rate", "rat", 1}, {"kitten", "sitting", 3}} {
		if d := editDistance(tt.a, tt.b); d != tt.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, d, tt.d)
		}
	}
}
