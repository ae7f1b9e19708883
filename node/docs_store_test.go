package node

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStoresDocValuesValidate keeps docs/STORES.md and the validator in
// agreement: every value the flux-node store table shows in backquotes, and
// every YAML example of the document, must be accepted.
func TestStoresDocValuesValidate(t *testing.T) {
	doc, err := os.ReadFile("../docs/STORES.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	// The store each value is checked with: store_prefix's values are
	// checked with the backend its row names before them.
	stores := map[string]string{
		"redis":    "redis://127.0.0.1:6379/0",
		"postgres": "postgres://postgres@127.0.0.1:5432/test",
		"nats-kv":  StoreNATSKV,
	}
	code := regexp.MustCompile("`([^`]+)`")
	check := func(row, key, store, value string) {
		t.Helper()
		c := DefaultConfig()
		c.Store = store
		switch key {
		case "store":
			c.Store = value
		case "store_write":
			c.StoreWrite = value
		case "flush_interval", "store_timeout":
			pd, err := time.ParseDuration(value)
			if err != nil {
				t.Errorf("%s: %s %q: %v", row, key, value, err)
				return
			}
			d := Duration(pd)
			if key == "flush_interval" {
				c.FlushInterval = d
			} else {
				c.StoreTimeout = d
			}
		case "store_prefix":
			c.StorePrefix = value
		}
		if err := c.Validate(); err != nil {
			t.Errorf("docs/STORES.md shows %s %q (with store %s), the validator refuses it: %v", key, value, store, err)
		}
	}
	checked := 0
	for _, line := range strings.Split(text, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`--store") {
			continue
		}
		key := strings.Trim(strings.TrimSpace(cells[2]), "`")
		values := cells[3]
		if key == "store_prefix" {
			// "Redis key prefix (...)", "PostgreSQL schema (...)", "KV bucket (...)".
			for _, part := range []struct{ marker, store string }{
				{"Redis key prefix", stores["redis"]}, {"PostgreSQL schema", stores["postgres"]}, {"KV bucket", stores["nats-kv"]},
			} {
				i := strings.Index(values, part.marker)
				if i < 0 {
					t.Fatalf("store_prefix row lost its %s", part.marker)
				}
				seg := values[i:]
				seg = seg[:strings.Index(seg, ")")]
				for _, m := range code.FindAllStringSubmatch(seg, -1) {
					check(line, key, part.store, m[1])
					checked++
				}
			}
			continue
		}
		for _, m := range code.FindAllStringSubmatch(values, -1) {
			v := m[1]
			// The table shows URL schemes; a URL of each stands for it.
			switch v {
			case "redis://…":
				v = stores["redis"]
			case "postgres://…":
				v = stores["postgres"]
			case "rediss://":
				v = "rediss://h:6379/0"
			case "unix://":
				v = "unix:///tmp/redis.sock"
			case "postgresql://":
				v = "postgresql://h/db"
			}
			check(line, key, stores["redis"], v)
			checked++
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d documented values: the table's shape changed, update this test", checked)
	}
	// The YAML examples of the node's settings.
	yamlBlock := regexp.MustCompile("(?s)```yaml\n(.*?)```")
	for _, m := range yamlBlock.FindAllStringSubmatch(text, -1) {
		if !strings.Contains(m[1], "store") {
			continue
		}
		if _, err := ParseConfig([]byte(m[1])); err != nil {
			t.Errorf("docs/STORES.md example does not validate: %v\n%s", err, m[1])
		}
	}
}
