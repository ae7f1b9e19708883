package main

import (
	"cmp"
	"fmt"
	"runtime/debug"
	"strings"
)

// buildVersion, when set at link time (go build -ldflags "-X
// main.buildVersion=v1.2.3"), is the version shown instead of the module's:
// a release built from a checkout has no module version of its own.
var buildVersion string

// version is the one line `flux-node version` and --version print: the
// module version and the VCS revision the binary was built from, as the
// Go toolchain recorded them (`go build` in a git checkout records the
// revision; `go install ...@vX` records the version).
func version() string {
	bi, ok := debug.ReadBuildInfo()
	return versionOf(bi, ok)
}

// versionOf formats build info; ok is false for a binary built without
// module support.
func versionOf(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "flux-node " + cmp.Or(buildVersion, "(unknown version: built without module information)")
	}
	var rev, at, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+modified"
			}
		}
	}
	parts := []string{"flux-node", cmp.Or(buildVersion, bi.Main.Version, "(devel)")}
	if rev != "" {
		parts = append(parts, "revision "+rev+dirty)
	}
	if at != "" {
		parts = append(parts, at)
	}
	return fmt.Sprintf("%s %s", strings.Join(parts, " "), bi.GoVersion)
}
