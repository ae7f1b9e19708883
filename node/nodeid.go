package node

import (
	"crypto/rand"
	"encoding/base32"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/fluxlimiter/flux/bus"
)

// nodeIDFile is the file in the data dir that keeps a generated node id.
const nodeIDFile = "node-id"

// resolveNodeID returns the configured node id or, when there is none, a
// generated one: <host>-<7 random characters>. A node with an embedded
// server keeps it in its data dir (nodeIDFile), so that it restarts under
// the same id; two nodes on one machine have two data dirs, hence two ids.
// A node joining a NATS URL gets a new id at each start.
func resolveNodeID(cfg Config, log *slog.Logger) string {
	if cfg.NodeID != "" {
		return cfg.NodeID
	}
	if cfg.NATSURL != "" || cfg.DataDir == "" {
		return generateNodeID()
	}
	path := filepath.Join(cfg.DataDir, nodeIDFile)
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if bus.ValidNodeID(id) == nil {
			return id
		}
		log.Warn("ignoring an invalid node id in the data dir", "file", path)
	}
	id := generateNodeID()
	err := os.MkdirAll(cfg.DataDir, 0o750)
	if err == nil {
		err = os.WriteFile(path, []byte(id+"\n"), 0o640)
	}
	if err != nil {
		log.Warn("cannot keep the generated node id in the data dir: the node gets another one at each start; set --node-id", "node_id", id, "error", err)
	}
	return id
}

func generateNodeID() string {
	host, _ := os.Hostname()
	b := []byte(host)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	host = strings.Trim(string(b[:min(len(b), 48)]), "-")
	if host == "" {
		host = "flux"
	}
	var r [5]byte
	_, _ = rand.Read(r[:])
	return host + "-" + strings.ToLower(base32.StdEncoding.EncodeToString(r[:])[:7])
}
