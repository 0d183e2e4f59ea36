// Package testenv holds what the tests that run the edgerelay binary as a
// user would share: an environment free of the machine's own settings, and
// a free loopback address for the agent to listen on.
package testenv

import (
	"net"
	"os"
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
