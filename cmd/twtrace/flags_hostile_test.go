package main

import (
	"bytes"
	"errors"
	"flag"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/twtrace/twtrace/tracer"
)

// Every command rejects a bad value of a flag it takes, and a flag it does not take, with
// exit status 2 and one line naming the flag, before touching the kernel.
func TestBadFlagsEveryCommand(t *testing.T) {
	tracing := []string{"watch", "timewait", "serve", "doctor"}
	filtering := append(tracing, "stat") // stat takes the socket filters, not the tracing flags
	printing := []string{"watch", "timewait", "doctor", "stat"}
	tests := []struct {
		commands []string
		args     []string
		flag     string // the message must mention it
	}{
		{filtering, []string{"--port", "0x10000"}, "-port"},
		{filtering, []string{"--port", "-1"}, "-port"},
		{filtering, []string{"--port", "http"}, "-port"},
		{filtering, []string{"--port", "99999999999999999999"}, "-port"},
		{filtering, []string{"--sport", "65536"}, "-sport"},
		{filtering, []string{"--dport", "-2"}, "-dport"},
		{filtering, []string{"--addr", "10.0.0.0/33"}, "-addr"},
		{filtering, []string{"--addr", "banana"}, "-addr"},
		{filtering, []string{"--addr", "fe80::1%eth0/64"}, "-addr"},
		{filtering, []string{"--addr", "10.0.0.1/8/1"}, "-addr"},
		{filtering, []string{"--duration", "-1s"}, "-duration"},
		{filtering, []string{"--duration", "soon"}, "-duration"},
		{filtering, []string{"--duration", "1d"}, "-duration"},
		{filtering, []string{"-4", "-6"}, "-4 and -6"},
		{filtering, []string{"-6", "--addr", "10.0.0.1"}, "-addr 10.0.0.1 conflicts with -6"},
		{filtering, []string{"-4", "--addr", "::1/128"}, "-addr ::1/128 conflicts with -4"},
		{filtering, []string{"--netns", "4294967296"}, "-netns"},
		{filtering, []string{"--netns", "-1"}, "-netns"},
		{filtering, []string{"--bogus"}, "-bogus"},
		{filtering, []string{"extra"}, `"extra"`},
		{printing, []string{"-o", "yaml"}, "-o"},
		{tracing, []string{"--log-level", "loud"}, "-log-level"},
		{tracing, []string{"--log-format", "xml"}, "-log-format"},
		{tracing, []string{"--ringbuf-size", "3M"}, "-ringbuf-size"},    // not a power of two
		{tracing, []string{"--ringbuf-size", "2048"}, "-ringbuf-size"},  // not a page multiple
		{tracing, []string{"--ringbuf-size", "4096M"}, "-ringbuf-size"}, // too large
		{tracing, []string{"--ringbuf-size", "1.5M"}, "-ringbuf-size"},  // garbage
		{tracing, []string{"--ringbuf-size", "4k"}, "-ringbuf-size"},    // garbage
		{tracing, []string{"--events", "bogus"}, "-events"},             // unknown family
		{tracing, []string{"--events", "state,"}, "-events"},            // empty family
		{tracing, []string{"--backend", "ebpf"}, "-backend"},            // unknown backend
		{tracing, []string{"--pid", "-5"}, "-pid"},
		// flags a command does not take, with why where another command takes them
		{[]string{"stat"}, []string{"--pid", "5"}, "--pid: stat reads sockets from sock_diag, which does not know their owners"},
		{[]string{"stat"}, []string{"--events", "state"}, "--events: stat does not trace"},
		{[]string{"stat"}, []string{"--backend", "auto"}, "--backend: stat does not trace"},
		{[]string{"stat"}, []string{"--ringbuf-size", "4M"}, "--ringbuf-size: stat does not trace"},
		{[]string{"stat"}, []string{"--log-level", "debug"}, "--log-level: stat writes no diagnostics"},
		{[]string{"stat"}, []string{"--log-format=json"}, "--log-format: stat writes no diagnostics"},
		{[]string{"serve"}, []string{"-o", "json"}, "-o: serve prints no events"},
		{[]string{"serve"}, []string{"--top-destinations", "5"}, "--top-destinations: renamed --top"},
		{[]string{"doctor", "stat", "probe"}, []string{"--bpf-stats"}, "-bpf-stats"},
		{[]string{"watch", "doctor", "stat"}, []string{"--top", "5"}, "-top"},
		{[]string{"watch", "serve"}, []string{"--interval", "1s"}, "-interval"},
		{[]string{"probe"}, []string{"--port", "80"}, "-port"},
		{[]string{"probe"}, []string{"--events", "all"}, "-events"},
		{[]string{"timewait", "doctor", "stat"}, []string{"--interval", "-1s"}, "-interval"},
		{[]string{"timewait", "doctor", "stat"}, []string{"--interval", "often"}, "-interval"},
		{[]string{"timewait", "serve"}, []string{"--top", "0"}, "--top 0"},
		{[]string{"serve"}, []string{"--listen", "9580"}, "-listen"},
		{[]string{"serve"}, []string{"--listen", "a\nb"}, "-listen"},
		{[]string{"probe"}, []string{"--backend", "ebpf"}, "-backend"},
		{[]string{"probe"}, []string{"-o", "yaml"}, "-o"},
		{[]string{"probe"}, []string{"--cost-connections", "500"}, "--cost-connections: only with --cost"},
		{[]string{"probe"}, []string{"--cost", "--cost-connections", "99"}, "--cost-connections 99: want 100-20000"},
		{[]string{"probe"}, []string{"--cost", "--cost-connections", "20001"}, "--cost-connections 20001: want 100-20000"},
		{[]string{"probe"}, []string{"--cost", "--cost-connections", "-1"}, "-cost-connections"},
		{[]string{"probe"}, []string{"--cost=maybe"}, "-cost"},
		{[]string{"watch", "timewait", "serve", "doctor"}, []string{"--cost"}, "-cost"},
		{tracing, []string{"--events", "state\nreset"}, "-events"},
		{filtering, []string{"--bad\nflag"}, "-bad\\nflag"},
		{filtering, []string{"-\xff"}, `\xff`},
	}
	for _, tt := range tests {
		for _, cmd := range tt.commands {
			// a bounded duration first: a case that wrongly passes must not trace forever
			args := append([]string{cmd, "--duration=1ms"}, tt.args...)
			if cmd == "probe" {
				args = append([]string{cmd}, tt.args...)
			}
			t.Run(strconv.Quote(strings.Join(args, " ")), func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				err := run(args, &stdout, &stderr)
				var ue usageError
				if !errors.As(err, &ue) {
					t.Fatalf("run = %v (%T), want a usage error", err, err)
				}
				stderr.Reset()
				if code := exitCode(err, &stderr); code != 2 {
					t.Errorf("exit status %d, want 2", code)
				}
				msg := strings.TrimPrefix(strings.TrimSuffix(stderr.String(), "\n"), "twtrace: ")
				checkOneLine(t, msg)
				if !strings.Contains(msg, tt.flag) {
					t.Errorf("message %q does not mention %q", msg, tt.flag)
				}
			})
		}
	}
}

// checkOneLine: a usage message is one printable, non-empty line.
func checkOneLine(t *testing.T, msg string) {
	t.Helper()
	if msg == "" || !utf8.ValidString(msg) || strings.ContainsFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) }) {
		t.Errorf("usage message %q is not one printable line", msg)
	}
}

// Whatever failed, the reason is one line (a verifier log excepted).
func TestExitMessageOneLine(t *testing.T) {
	var stderr bytes.Buffer
	if code := exitCode(errors.New("listen on a\nb:1: lookup a\nb: no such host"), &stderr); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if want := "twtrace: listen on a\\nb:1: lookup a\\nb: no such host\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                 "plain",
		"a\nb\r\tc":             `a\nb\r\tc`,
		"\xffx\xc3":             `\xffx\xc3`,
		"é 日本 \u2028 \x00 \x7f": `é 日本 \u2028 \x00 \x7f`,
		`"quoted" \ kept`:       `"quoted" \ kept`,
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzTraceFlags feeds arbitrary values to the filter and tracing flags of every command
// (command picks one of sharedFlags): the parser never panics; it returns either a
// one-line usage error or options the kernel side can trust. An empty value leaves its
// flag out.
func FuzzTraceFlags(f *testing.F) {
	commands := slices.Sorted(maps.Keys(sharedFlags))
	f.Add("10.0.0.0/8", "443", "4M", "all", "auto", "30s", false, false, "", uint8(slices.Index(commands, "watch")))
	f.Fuzz(func(t *testing.T, addr, port, ringbuf, events, backend, duration string, v4, v6 bool, extra string, command uint8) {
		cmd := commands[int(command)%len(commands)]
		var args []string
		for _, fl := range []struct{ name, value string }{
			{"addr", addr}, {"port", port}, {"ringbuf-size", ringbuf}, {"events", events}, {"backend", backend}, {"duration", duration},
		} {
			if fl.value != "" {
				args = append(args, "--"+fl.name+"="+fl.value)
			}
		}
		if v4 {
			args = append(args, "-4")
		}
		if v6 {
			args = append(args, "-6")
		}
		if name, _, _ := strings.Cut(strings.TrimLeft(extra, "-"), "="); strings.HasPrefix(extra, "-") && (name == "h" || name == "help") {
			return // prints the usage to stdout: TestRunDispatch covers it
		}
		if extra != "" {
			args = append(args, extra)
		}
		fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
		tf := newTraceFlags(fs)
		err := parseFlags(fs, args)
		var o tracer.Options
		if err == nil {
			o, err = tf.options()
		}
		if err != nil {
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("%q: error %v (%T) is not a usage error", args, err, err)
			}
			checkOneLine(t, ue.msg)
			return
		}
		if sharedFlags[cmd]&groupTracing == 0 && (ringbuf != "" || events != "" || backend != "") {
			t.Errorf("%s %q: a tracing flag accepted by a command that does not trace", cmd, args)
		}
		if tf.duration < 0 {
			t.Errorf("%q: negative duration %s accepted", args, tf.duration)
		}
		if o.Families == 0 || o.Families&^tracer.AllFamilies != 0 {
			t.Errorf("%q: families %#x", args, uint32(o.Families))
		}
		if _, err := tracer.ParseBackend(string(o.Backend)); err != nil {
			t.Errorf("%q: backend %q", args, o.Backend)
		}
		if n := o.RingBufferSize; n == 0 || n&(n-1) != 0 || n%uint32(os.Getpagesize()) != 0 {
			t.Errorf("%q: ring buffer size %d", args, n)
		}
		if p := o.Filter.Addr; p.IsValid() {
			if p != p.Masked() || p.Addr().Zone() != "" || (p.Addr().Is4In6() && p.Bits() >= 96) {
				t.Errorf("%q: prefix %s is not masked, has a zone or is an IPv4 prefix written as IPv6", args, p)
			}
			if (o.Filter.Family == 4 && !p.Addr().Is4()) || (o.Filter.Family == 6 && !p.Addr().Is6()) {
				t.Errorf("%q: prefix %s with -%d", args, p, o.Filter.Family)
			}
		}
		if o.Filter.Family != 0 && o.Filter.Family != 4 && o.Filter.Family != 6 {
			t.Errorf("%q: family %d", args, o.Filter.Family)
		}
		if port != "" && extra == "" {
			if v, err := strconv.ParseInt(port, 0, 64); err != nil || v < 0 || v > 65535 || uint16(v) != o.Filter.Port {
				t.Errorf("%q: port %d from %q", args, o.Filter.Port, port)
			}
		}
	})
}
