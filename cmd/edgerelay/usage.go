package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
)

// Every subcommand answers --help (and -h) the same way: its usage text,
// then its flags, on stdout, exit 0. A usage error prints the problem and the
// same text on stderr, exit 2.

// newFlagSet returns a subcommand's flag set whose usage is text followed by
// the flags, if it has any.
func newFlagSet(name, text string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		io.WriteString(fs.Output(), text)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			io.WriteString(fs.Output(), "\nflags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args with fs. It returns done when the command must
// stop: with 0 after --help, with 2 after a usage error. Later output of the
// flag set (fs.Usage) goes to stderr.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, flag.ErrHelp):
		stdout.Write(buf.Bytes())
		return 0, true
	default:
		stderr.Write(buf.Bytes())
		return 2, true
	}
}

// usageError reports a usage problem the flag package does not see (a
// missing or extra argument) with the command's usage, and returns 2.
func usageError(fs *flag.FlagSet, stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.SetOutput(stderr)
	fs.Usage()
	return 2
}

// isHelp reports whether arg asks for help, as the flag package
// understands it, or as the word help.
func isHelp(arg string) bool {
	switch arg {
	case "help", "-h", "--h", "-help", "--help":
		return true
	}
	return false
}
