package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrDataDirInUse is returned by Start when another live node (in this
// process or another) holds the data dir: two embedded servers sharing one
// data dir share one node id and JetStream store, refuse each other's
// routes and each serve the whole limit alone.
var ErrDataDirInUse = errors.New("flux-node: data dir in use by another node")

// dataDirLockFile is the file in the data dir a running node holds an
// exclusive lock on. The lock, not the file, says the dir is in use: it is
// released when the node stops or its process dies.
const dataDirLockFile = "flux-node.lock"

// lockDataDir takes the data dir's lock, or fails with ErrDataDirInUse
// naming the fix. The returned file keeps the lock until closed.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, dataDirLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("flux-node: data dir (--data-dir): %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("flux-node: data dir (--data-dir) lock %s: %w", path, err)
	}
	if held {
		who := ""
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				who = fmt.Sprintf(" (process %d)", pid)
			}
		}
		f.Close()
		return nil, fmt.Errorf("%w%s: %s; give each node on this machine its own --data-dir (its node id is kept there, or set --node-id too)", ErrDataDirInUse, who, dir)
	}
	// Who holds it, for the message of the next node that tries.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}
