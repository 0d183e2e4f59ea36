package configs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// promtool returns the path of Prometheus's promtool, or skips the test,
// saying so loudly, when it is not installed (CI installs it: .ci/run; a CI
// run without it fails, as the systemd-analyze check does).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	const install = "Debian: apt-get install --no-install-recommends prometheus"
	if os.Getenv("CI") != "" {
		t.Fatalf("promtool is not installed in CI; .ci/run installs it (%s)", install)
	}
	msg := "promtool is not installed: this Prometheus rule / PromQL check is SKIPPED. " +
		"Install it to run it (" + install + "); .ci/run does."
	fmt.Fprintln(os.Stderr, "WARNING:", t.Name()+":", msg)
	t.Skip(msg)
	return ""
}

func ruleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("prometheus", "*.rules.yml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("rule files: %v %v", files, err)
	}
	return files
}

// TestPrometheusRulesCheck: `promtool check rules` accepts every rules file.
func TestPrometheusRulesCheck(t *testing.T) {
	tool := promtool(t)
	for _, f := range ruleFiles(t) {
		out, err := exec.Command(tool, "check", "rules", f).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool check rules %s: %v\n%s", f, err, out)
		}
	}
}

// TestPrometheusRulesUnit runs `promtool test rules` on every test file: each
// alert fires for one series and stays silent for another, the first drop
// burst after a 0 sample fires, and the dcgm-exporter names come out right.
func TestPrometheusRulesUnit(t *testing.T) {
	tool := promtool(t)
	tests, err := filepath.Glob(filepath.Join("prometheus", "tests", "*.yml"))
	if err != nil || len(tests) < 2 {
		t.Fatalf("test files: %v %v", tests, err)
	}
	for _, f := range tests {
		out, err := exec.Command(tool, "test", "rules", f).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool test rules %s: %v\n%s", f, err, out)
		} else {
			t.Logf("promtool test rules %s: SUCCESS", f)
		}
	}
}

// alertBlock is one `- alert:` entry of a rules file, as text.
type alertBlock struct{ name, text string }

func alertBlocks(t *testing.T, path string) []alertBlock {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	parts := regexp.MustCompile(`(?m)^\s*- alert:\s*`).Split(string(raw), -1)
	var out []alertBlock
	for _, p := range parts[1:] {
		name, _, _ := strings.Cut(p, "\n")
		out = append(out, alertBlock{strings.TrimSpace(name), p})
	}
	return out
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestAlertRulesComplete: every alert the issue asks for exists, and each
// has a for:, a severity, a runbook_url whose anchor is a heading of
// docs/OPERATIONS.md, and unit tests.
func TestAlertRulesComplete(t *testing.T) {
	blocks := alertBlocks(t, filepath.Join("prometheus", "edgerelay.rules.yml"))
	var names []string
	for _, b := range blocks {
		names = append(names, b.name)
	}
	for _, want := range []string{
		"EdgerelayDown", "EdgerelayAbsent", "EdgerelayRestarting", "EdgerelayEventsDropped",
		"EdgerelayBacklogGrowing", "EdgerelaySinkPaused", "EdgerelayDeliveryLag",
		"EdgerelaySpoolNearCap", "EdgerelaySpoolDegraded", "EdgerelayNotDurable", "EdgerelayGPULost",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("no alert %s", want)
		}
	}

	doc, err := os.ReadFile(filepath.Join("..", "docs", "OPERATIONS.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	prose := regexp.MustCompile("(?ms)^```.*?^```").ReplaceAllString(string(doc), "") // a # in a code block is no heading
	for _, m := range regexp.MustCompile(`(?m)^#+\s+(.+)$`).FindAllStringSubmatch(prose, -1) {
		anchors[githubAnchor(m[1])] = true
	}
	tests, err := os.ReadFile(filepath.Join("prometheus", "tests", "edgerelay.rules.test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	const base = "https://github.com/livepeer/edgerelay/blob/main/docs/OPERATIONS.md#"
	runbook := regexp.MustCompile(`runbook_url:\s*"([^"]+)"`)
	for _, b := range blocks {
		if !regexp.MustCompile(`(?m)^\s+for:\s*[1-9][0-9]*[smh]\s*$`).MatchString(b.text) {
			t.Errorf("%s: no for: duration", b.name)
		}
		if !regexp.MustCompile(`(?m)^\s+severity:\s*(critical|warning)\s*$`).MatchString(b.text) {
			t.Errorf("%s: no severity label", b.name)
		}
		m := runbook.FindStringSubmatch(b.text)
		switch {
		case m == nil:
			t.Errorf("%s: no runbook_url", b.name)
		case !strings.HasPrefix(m[1], base):
			t.Errorf("%s: runbook_url %s is not in docs/OPERATIONS.md", b.name, m[1])
		case !anchors[strings.TrimPrefix(m[1], base)]:
			t.Errorf("%s: runbook_url anchor #%s is not a heading of docs/OPERATIONS.md", b.name, strings.TrimPrefix(m[1], base))
		}
		firing := regexp.MustCompile(`alertname: ` + b.name + `\n\s+exp_alerts:\n\s+- exp_labels:`)
		silent := regexp.MustCompile(`alertname: ` + b.name + `\n\s+exp_alerts: \[\]`)
		if !firing.Match(tests) || !silent.Match(tests) {
			t.Errorf("%s: the unit tests lack a firing or a silent case", b.name)
		}
	}
}
