// Package testenv holds what tests in several packages share: an
// environment free of the machine's own settings and a free loopback address
// for the agent the tests run as a user would, and a small real file system
// to fill for the tests of a full disk.
package testenv

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Clean is the environment of the process without any variable the agent
// reads (EDGERELAY_*, SCOPE_*, the DAYDREAM_METRICS_URL fallback, and the
// directories and socket systemd hands a service), followed by extra: a
// test's agent sees only the settings the test gives it.
func Clean(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "EDGERELAY_") || strings.HasPrefix(k, "SCOPE_") || k == "DAYDREAM_METRICS_URL" ||
			k == "STATE_DIRECTORY" || k == "RUNTIME_DIRECTORY" || k == "NOTIFY_SOCKET" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// FreeAddr is a 127.0.0.1 address whose port was free when it was asked
// for.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// MountTmpfs mounts a tmpfs of size at dir, unmounted when the test ends.
// Mounting needs root: elsewhere the test is skipped, saying so, and under
// CI (which runs as root) a failed mount fails the test.
func MountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mounting a tmpfs (CI runs as root): %v %s", err, out)
		}
		t.Skipf("SKIP: cannot mount a tmpfs here (needs root), so no real full disk: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
}
