// Command twtrace traces the Linux TCP stack: state transitions, TIME_WAIT sockets
// from birth to death, timewait bucket overflows and resets.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cilium/ebpf"
)

var version = "dev"

// usageError is a bad command line: exit status 2. hint, if set, is a second line
// saying where to look.
type usageError struct{ msg, hint string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{msg: oneLine(fmt.Sprintf(format, args...))}
}

// oneLine escapes what would break a one-line message: control characters, line and
// paragraph separators, invalid UTF-8 (a flag value may carry any of them).
func oneLine(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

const topUsage = `twtrace: trace TCP state transitions, TIME_WAIT lifetimes, bucket overflows and resets.

Usage:
  twtrace watch [flags]    stream events until interrupted or --duration
  twtrace timewait [flags] lifetimes, occupancy, port-exhaustion forecast, overflows, resets
  twtrace stat [flags]     count TCP sockets per state and namespace, now (no tracing)
  twtrace doctor [flags]   TIME_WAIT sysctls checked against what the kernel does, with evidence
  twtrace serve [flags]    node agent: Prometheus metrics on /metrics, health on /healthz
  twtrace probe            show the kernel's support and the backend chosen per hook (--cost: each program's cost)
  twtrace version          print the version

Run 'twtrace CMD --help' for a command's flags.
`

func main() {
	os.Exit(exitCode(run(os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "twtrace: %s\n", oneLine(ue.msg))
		if ue.hint != "" {
			fmt.Fprintln(stderr, ue.hint)
		}
		return 2
	}
	var un errUnavailable
	if errors.As(err, &un) {
		fmt.Fprintf(stderr, "twtrace: %s\n", oneLine(un.Error()))
		return un.exitStatus()
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		fmt.Fprintf(stderr, "twtrace: the kernel's verifier rejected a program:\n%+v\n", ve)
		return 1
	}
	fmt.Fprintf(stderr, "twtrace: %s\n", oneLine(err.Error()))
	return 1
}

func run(args []string, stdout, stderr io.Writer) error {
	err := command(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) { // the command printed its usage, as asked
		return nil
	}
	return err
}

func command(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return usagef("missing command")
	}
	switch args[0] {
	case "watch":
		return watch(args[1:], stdout, stderr)
	case "probe":
		return probe(args[1:], stdout, stderr)
	case "stat":
		return stat(args[1:], stdout, stderr)
	case "timewait":
		return timewait(args[1:], os.Stdin, stdout, stderr)
	case "doctor":
		return doctorCmd(args[1:], os.Stdin, stdout, stderr)
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "version":
		return versionCommand(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, topUsage)
		return nil
	}
	return usageError{msg: oneLine(fmt.Sprintf("unknown command %q", args[0])), hint: "Run 'twtrace --help' for usage."}
}
