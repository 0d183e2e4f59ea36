package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/internal/testenv"

	"github.com/livepeer/edgerelay/spool"
)

// flagLine is how flag.PrintDefaults starts a flag's line: the flag, then at
// most one word naming its value. More words mean a usage string whose
// backquotes the flag package took for the value's name.
var flagLine = regexp.MustCompile(`^  -[a-z0-9-]+( [A-Za-z:_-]+)?$`)

// TestHelpForEveryCommand: --help and -h print the command's usage text and
// its flags on stdout and exit 0, for every command and spool subcommand;
// `edgerelay help <command>` prints the same.
func TestHelpForEveryCommand(t *testing.T) {
	for _, c := range []struct {
		args  []string
		flags bool
	}{
		{[]string{"run"}, true},
		{[]string{"tail"}, true},
		{[]string{"stats"}, true},
		{[]string{"spool"}, false},
		{[]string{"spool", "stat"}, true},
		{[]string{"spool", "dump"}, true},
		{[]string{"validate"}, true},
		{[]string{"bench"}, true},
		{[]string{"version"}, false},
	} {
		name := strings.Join(c.args, " ")
		var first string
		for _, h := range []string{"--help", "-h"} {
			var stdout, stderr bytes.Buffer
			code := run(append(slices.Clone(c.args), h), &stdout, &stderr)
			out := stdout.String()
			if code != 0 || stderr.Len() != 0 {
				t.Errorf("%s %s: exit %d, stderr %q; want 0 and nothing", name, h, code, stderr.String())
			}
			if !strings.HasPrefix(out, "usage: edgerelay "+name) {
				t.Errorf("%s %s: stdout does not start with its usage line:\n%s", name, h, out)
			}
			if strings.Contains(out, "Usage of") {
				t.Errorf("%s %s: the flag package's default header:\n%s", name, h, out)
			}
			if got := strings.Contains(out, "\nflags:\n"); got != c.flags {
				t.Errorf("%s %s: flags section %v, want %v:\n%s", name, h, got, c.flags, out)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "  -") && !flagLine.MatchString(line) {
					t.Errorf("%s %s: mangled flag line %q", name, h, line)
				}
			}
			if first == "" {
				first = out
			} else if out != first {
				t.Errorf("%s: -h and --help differ", name)
			}
		}
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"help"}, c.args...), &stdout, &stderr); code != 0 || stdout.String() != first {
			t.Errorf("help %s: exit %d, output differs from %s --help:\n%s%s", name, code, name, stdout.String(), stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "edgerelay help <command>") {
		t.Errorf("--help: exit %d\n%s", code, stdout.String())
	}
}

// TestUsageErrors: a usage error says what is wrong, shows the usage on
// stderr, prints nothing on stdout, and exits 2.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{}, "usage: edgerelay <command>"},
		{[]string{"nope"}, `unknown command "nope"`},
		{[]string{"tail", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"stats", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"spool"}, "usage: edgerelay spool stat"},
		{[]string{"spool", "list"}, `unknown subcommand "list"`},
		{[]string{"spool", "stat", "--sink", "x"}, "flag provided but not defined: -sink"},
		{[]string{"validate"}, "no file or directory to validate"},
		{[]string{"version", "x"}, `unexpected arguments ["x"]`},
		{[]string{"bench", "x"}, `unexpected arguments ["x"]`},
		{[]string{"run", "--no-such-flag"}, "flag provided but not defined"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(c.args, &stdout, &stderr)
		if code != 2 || stdout.Len() != 0 || !strings.Contains(stderr.String(), c.says) || !strings.Contains(stderr.String(), "usage: edgerelay") {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s\nwant 2, nothing on stdout, %q and the usage on stderr", c.args, code, stdout.String(), stderr.String(), c.says)
		}
	}
}

// TestStatsAndTailRefusedToken: against an agent that requires a token,
// stats and tail say what a 401 means and exit 1; with the token, stats
// works.
func TestStatsAndTailRefusedToken(t *testing.T) {
	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	agent := exec.Command(binPath, "run")
	agent.Env = testenv.Clean("EDGERELAY_ENABLED=true", "EDGERELAY_LISTEN="+addr, "EDGERELAY_STATE_DIR="+filepath.Join(dir, "state"),
		"EDGERELAY_SOCKET=off", "EDGERELAY_NVML=off", "EDGERELAY_HOSTNET=off", "EDGERELAY_STATUS_INTERVAL=1h",
		"EDGERELAY_INGEST_TOKEN=right-token")
	var agentErr lockedBuffer
	agent.Stdout, agent.Stderr = &agentErr, &agentErr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		agent.Process.Kill()
		agent.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", agentErr.String())
		}
	}()
	waitReady(t, &http.Client{Timeout: 5 * time.Second}, addr)

	client := func(token string, args ...string) (int, string, string) {
		cmd := exec.Command(binPath, append(args, "--addr", addr)...)
		cmd.Env = testenv.Clean()
		if token != "" {
			cmd.Env = append(cmd.Env, "EDGERELAY_INGEST_TOKEN="+token)
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, stdout.String(), stderr.String()
	}
	for _, c := range []struct {
		token, says string
	}{
		{"wrong-token", "the agent refused the token (HTTP 401): set EDGERELAY_INGEST_TOKEN"},
		{"", "the agent requires a token (HTTP 401): set EDGERELAY_INGEST_TOKEN or pass --token"},
	} {
		for _, cmd := range []string{"stats", "tail"} {
			code, _, stderr := client(c.token, cmd)
			if code != 1 || !strings.Contains(stderr, "edgerelay "+cmd+": "+c.says) || strings.Contains(stderr, "<nil>") {
				t.Errorf("%s with token %q: exit %d, stderr %q; want 1 and %q", cmd, c.token, code, stderr, c.says)
			}
		}
	}
	code, stdout, stderr := client("right-token", "stats")
	var st map[string]any
	if code != 0 || json.Unmarshal([]byte(stdout), &st) != nil || st["state"] == nil {
		t.Errorf("stats with the token: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestSpoolStatJSONKeys: spool stat --json names its fields in snake_case.
func TestSpoolStatJSONKeys(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(spool.Options{Path: filepath.Join(dir, "spool.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.AddSink("http"); err != nil {
		t.Fatal(err)
	}
	if err := sp.Append([][]byte{[]byte(`{"a":1}`), []byte(`{"b":2}`)}); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"spool", "stat", "--json", "--state-dir", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	keys := slices.Sorted(maps.Keys(got))
	if want := []string{"bytes", "degraded", "durable", "first_seq", "last_seq", "path", "quarantined", "records", "sinks"}; !slices.Equal(keys, want) {
		t.Errorf("keys %q, want %q", keys, want)
	}
	var sinks map[string]map[string]uint64
	if err := json.Unmarshal(got["sinks"], &sinks); err != nil {
		t.Fatal(err)
	}
	if keys := slices.Sorted(maps.Keys(sinks["http"])); !slices.Equal(keys, []string{"acked", "cursor", "evicted", "pending", "received"}) {
		t.Errorf("sink keys %q", keys)
	}
	if sinks["http"]["pending"] != 2 || string(got["records"]) != "2" || string(got["last_seq"]) != "2" {
		t.Errorf("figures: %s", stdout.String())
	}
}

// TestLogDurationsAsText: the JSON log writes every duration as Go's
// duration text, as the text log and the values logged as text do.
func TestLogDurationsAsText(t *testing.T) {
	var buf bytes.Buffer
	logger := newLogger(&buf, "json", new(slog.LevelVar)).With("grace", 5*time.Second)
	logger.Info("x", "took", 1500*time.Millisecond, slog.Group("retry", "in", 250*time.Microsecond), "n", 3, "s", "text")
	var line struct {
		Grace string
		Took  string
		Retry struct{ In string }
		N     int
		S     string
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if line.Grace != "5s" || line.Took != "1.5s" || line.Retry.In != "250µs" || line.N != 3 || line.S != "text" {
		t.Errorf("log line %s", buf.String())
	}
	buf.Reset()
	newLogger(&buf, "text", new(slog.LevelVar)).Info("x", "took", 1500*time.Millisecond)
	if !strings.Contains(buf.String(), "took=1.5s") {
		t.Errorf("text log line %s", buf.String())
	}
}

// TestRunCheck: run --check prints every effective setting with secrets
// redacted (tokens, keys, passwords; URLs without credentials or query),
// starts nothing, and exits 0 for a valid configuration, 2 for a bad one,
// naming the variable, still without a secret.
func TestRunCheck(t *testing.T) {
	secrets := []string{
		"EDGERELAY_ENABLED=true",
		"EDGERELAY_INGEST_TOKEN=SECRET-token",
		"EDGERELAY_HTTP_URL=https://user:SECRET-pw@metrics.example/v1/metrics?api_key=SECRET-q",
		"EDGERELAY_HTTP_API_KEY=SECRET-key",
		"EDGERELAY_TRICKLE_SUBSCRIBE=https://orch.example/s-events?sig=SECRET-sig",
		"EDGERELAY_KAFKA_BROKERS=k1:9092", "EDGERELAY_KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
		"EDGERELAY_KAFKA_USERNAME=u", "EDGERELAY_KAFKA_PASSWORD=SECRET-kafka",
	}
	for _, c := range []struct {
		name  string
		env   []string
		args  []string
		code  int
		wants []string
	}{
		{"valid", secrets, []string{"run", "--check"}, 0, []string{
			"EDGERELAY_HTTP_URL=https://metrics.example/v1/metrics\n", "EDGERELAY_HTTP_API_KEY=<redacted>\n",
			"EDGERELAY_INGEST_TOKEN=<redacted>\n", "EDGERELAY_KAFKA_PASSWORD=<redacted>\n",
			"EDGERELAY_TRICKLE_SUBSCRIBE=https://orch.example/s-events\n", "EDGERELAY_STDOUT=false\n",
			"EDGERELAY_SHUTDOWN_GRACE=3s\n", "EDGERELAY_KAFKA_TOPIC=events-x\n", "configuration valid",
		}},
		{"bad", append(slices.Clone(secrets), "EDGERELAY_SAMPLE_INTERVAL=10ms"), []string{"run", "--check"}, 2, []string{
			"EDGERELAY_SAMPLE_INTERVAL: 10ms is below the minimum", "EDGERELAY_HTTP_API_KEY=<redacted>\n",
		}},
		{"bad URL", []string{"EDGERELAY_ENABLED=true", "EDGERELAY_HTTP_URL=ftp://u:SECRET-pw@x/?k=SECRET-q", "EDGERELAY_HTTP_API_KEY=k"}, []string{"run", "--check"}, 2, []string{
			"EDGERELAY_HTTP_URL:",
		}},
		{"not enabled", nil, []string{"run", "--check"}, 0, []string{"EDGERELAY_ENABLED=false\n", "not enabled"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if c.code == 0 && c.name == "valid" {
				args = append(slices.Clone(args), "--shutdown-grace", "3s", "--kafka-topic", "events-x")
			}
			cmd := exec.Command(binPath, args...)
			cmd.Env = testenv.Clean(c.env...)
			cmd.Dir = t.TempDir()
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			all := stdout.String() + stderr.String()
			if code != c.code {
				t.Errorf("exit %d, want %d:\n%s", code, c.code, all)
			}
			for _, w := range c.wants {
				if !strings.Contains(all, w) {
					t.Errorf("output lacks %q:\n%s", w, all)
				}
			}
			if strings.Contains(all, "SECRET") {
				t.Errorf("a secret in the output:\n%s", all)
			}
			if ents, _ := os.ReadDir(cmd.Dir); len(ents) != 0 {
				t.Errorf("--check created %s", ents[0].Name())
			}
		})
	}
}

// TestVersionEverywhere: `edgerelay version` and --version print the
// version set at link time (as the Makefile does), the VCS revision and the
// Go version; the first log line of a run carries them too.
func TestVersionEverywhere(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(binPath, arg).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^edgerelay ` + regexp.QuoteMeta(testVersion) + ` \(revision [0-9a-f]{40}(-dirty)?, go1\.[0-9.]+\)\n$`).Match(out) {
			t.Errorf("%s: %q", arg, out)
		}
	}
	// The revision is the one Go stamped (this checkout's) or, with
	// -buildvcs=false, the one set at link time.
	out, _ := exec.Command(binPath, "version").Output()
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if !strings.Contains(string(out), testRevision) && (err != nil || !strings.Contains(string(out), strings.TrimSpace(string(head)))) {
		t.Errorf("version %q names neither the link-time revision nor the checkout's", out)
	}
	// A run that stops at its configuration still logs its first line.
	cmd := exec.Command(binPath, "run")
	cmd.Env = testenv.Clean("EDGERELAY_ENABLED=true", "EDGERELAY_LOG_FORMAT=json", "EDGERELAY_SAMPLE_INTERVAL=10ms")
	cmd.Dir = t.TempDir()
	out, _ = cmd.CombinedOutput()
	first, _, _ := strings.Cut(string(out), "\n")
	var line map[string]any
	if err := json.Unmarshal([]byte(first), &line); err != nil || line["msg"] != "edgerelay starting" || line["version"] != testVersion || line["go_version"] == nil || line["revision"] == nil {
		t.Errorf("first log line %q", first)
	}
}

// TestRunHelpTypedFlags: run's help names each flag's type, and a boolean
// flag needs no value.
func TestRunHelpTypedFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"run", "--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"\n  -enabled\n", "\n  -shutdown-grace duration\n", "\n  -kafka-topic string\n", "\n  -kafka-tls\n", "\n  -spool-max-bytes bytes\n", "\n  -http-url url\n", "\n  -check\n", "\n  -pprof\n"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("run --help lacks %q", want)
		}
	}
}
