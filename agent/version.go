package agent

import (
	"runtime"
	"runtime/debug"
)

// Build describes the running binary: edgerelay_build_info's labels, the
// version in /v1/stats and in the first log line.
type Build struct {
	Version   string `json:"version"`    // -ldflags "-X main.version=…" (the Makefile's git describe), else "dev"
	Revision  string `json:"revision"`   // the VCS revision Go stamped into the binary, else the one set at link time, else "unknown"
	GoVersion string `json:"go_version"` // the Go toolchain that built it
}

// BuildOf returns the build description of this binary for version and
// revision (the values main sets at link time; "" means "dev" and
// unknown). The revision comes from the module's build information
// (vcs.revision, with "-dirty" when the tree had changes), which go build
// stamps in a git checkout unless -buildvcs=false; revision is the
// fallback (the Makefile sets both).
func BuildOf(version, revision string) Build {
	b := Build{Version: version, Revision: revision, GoVersion: runtime.Version()}
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Revision == "" {
		b.Revision = "unknown"
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" {
		b.Revision = rev
		if dirty {
			b.Revision += "-dirty"
		}
	}
	return b
}
