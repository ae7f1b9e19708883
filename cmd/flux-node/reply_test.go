package main

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// --reply-prefixes overrides reply_prefixes from the file, and a prefix
// reaching the node's own subjects is refused.
func TestReplyPrefixesFlag(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "flux.yaml")
	if err := os.WriteFile(cfgPath, []byte("reply_prefixes: [_INBOX.]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) ([]string, error) {
		fs := flag.NewFlagSet("flux-node", flag.ContinueOnError)
		path, ovs := serveFlags(fs)
		if err := fs.Parse(append([]string{"--config", cfgPath}, args...)); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(*path, *ovs)
		return cfg.ReplyPrefixes, err
	}
	if got, err := parse(); err != nil || !slices.Equal(got, []string{"_INBOX."}) {
		t.Fatalf("from the file: %q, %v", got, err)
	}
	if got, err := parse("--reply-prefixes", "_INBOX., _INBOX_alice."); err != nil || !slices.Equal(got, []string{"_INBOX.", "_INBOX_alice."}) {
		t.Fatalf("from the flag: %q, %v", got, err)
	}
	if _, err := parse("--reply-prefixes", "_FLUX."); err == nil || !strings.Contains(err.Error(), "reply_prefixes") {
		t.Fatalf("--reply-prefixes _FLUX.: %v, want refused", err)
	}
}
