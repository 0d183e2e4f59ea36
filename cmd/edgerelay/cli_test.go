package main

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"
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
