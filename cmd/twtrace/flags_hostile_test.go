package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/twtrace/twtrace/tracer"
)

// Every command taking a flag rejects a bad value of it with exit status 2 and one line
// naming the flag, before touching the kernel.
func TestBadFlagsEveryCommand(t *testing.T) {
	tracing := []string{"watch", "timewait", "serve", "doctor"}
	all := append(tracing, "stat") // stat takes the socket filters, and refuses the tracing flags
	tests := []struct {
		commands []string
		args     []string
		flag     string // the message must mention it
	}{
		{all, []string{"--port", "0x10000"}, "-port"},
		{all, []string{"--port", "-1"}, "-port"},
		{all, []string{"--port", "http"}, "-port"},
		{all, []string{"--port", "99999999999999999999"}, "-port"},
		{all, []string{"--sport", "65536"}, "-sport"},
		{all, []string{"--dport", "-2"}, "-dport"},
		{all, []string{"--addr", "10.0.0.0/33"}, "-addr"},
		{all, []string{"--addr", "banana"}, "-addr"},
		{all, []string{"--addr", "fe80::1%eth0/64"}, "-addr"},
		{all, []string{"--addr", "10.0.0.1/8/1"}, "-addr"},
		{all, []string{"--duration", "-1s"}, "-duration"},
		{all, []string{"--duration", "soon"}, "-duration"},
		{all, []string{"--duration", "1d"}, "-duration"},
		{all, []string{"-4", "-6"}, "-4 and -6"},
		{all, []string{"-6", "--addr", "10.0.0.1"}, "-addr 10.0.0.1 conflicts with -6"},
		{all, []string{"-4", "--addr", "::1/128"}, "-addr ::1/128 conflicts with -4"},
		{all, []string{"-o", "yaml"}, "-o"},
		{all, []string{"--netns", "4294967296"}, "-netns"},
		{all, []string{"--netns", "-1"}, "-netns"},
		{all, []string{"--bogus"}, "-bogus"},
		{all, []string{"--log-level", "loud"}, "-log-level"},
		{all, []string{"--log-format", "xml"}, "-log-format"},
		{all, []string{"extra"}, `"extra"`},
		{all, []string{"--ringbuf-size", "3M"}, "-ringbuf-size"},     // not a power of two
		{all, []string{"--ringbuf-size", "2048"}, "-ringbuf-size"},   // not a page multiple
		{all, []string{"--ringbuf-size", "4096M"}, "-ringbuf-size"},  // too large
		{all, []string{"--ringbuf-size", "1.5M"}, "-ringbuf-size"},   // garbage
		{all, []string{"--ringbuf-size", "4k"}, "-ringbuf-size"},     // garbage
		{all, []string{"--events", "bogus"}, "-events"},              // unknown family
		{all, []string{"--events", "state,"}, "-events"},             // empty family
		{all, []string{"--backend", "ebpf"}, "-backend"},             // unknown backend
		{tracing, []string{"--pid", "-5"}, "-pid"},                   // stat refuses --pid altogether
		{[]string{"stat"}, []string{"--pid", "5"}, "-pid"},           //
		{[]string{"stat"}, []string{"--events", "state"}, "-events"}, // it does not trace
		{[]string{"stat"}, []string{"--backend", "auto"}, "-backend"},
		{[]string{"stat"}, []string{"--ringbuf-size", "4M"}, "-ringbuf-size"},
		{[]string{"timewait", "doctor", "stat"}, []string{"--interval", "-1s"}, "-interval"},
		{[]string{"timewait", "doctor", "stat"}, []string{"--interval", "often"}, "-interval"},
		{[]string{"timewait"}, []string{"--top", "0"}, "-top"},
		{[]string{"serve"}, []string{"--top-destinations", "0"}, "-top-destinations"},
		{[]string{"serve"}, []string{"--listen", "9580"}, "-listen"},
		{[]string{"serve"}, []string{"--listen", "a\nb"}, "-listen"},
		{[]string{"probe"}, []string{"--backend", "ebpf"}, "-backend"},
		{[]string{"probe"}, []string{"-o", "yaml"}, "-o"},
		{[]string{"probe"}, []string{"--port", "80"}, "-port"},
		{all, []string{"--events", "state\nreset"}, "-events"},
		{all, []string{"--bad\nflag"}, "-bad\\nflag"},
		{all, []string{"-\xff"}, `\xff`},
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

// FuzzTraceFlags feeds arbitrary values to the filter and tracing flags: the parser never
// panics; it returns either a one-line usage error or options the kernel side can trust.
// An empty value leaves its flag out.
func FuzzTraceFlags(f *testing.F) {
	f.Add("10.0.0.0/8", "443", "4M", "all", "auto", "30s", false, false, "")
	f.Fuzz(func(t *testing.T, addr, port, ringbuf, events, backend, duration string, v4, v6 bool, extra string) {
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
		fs := flag.NewFlagSet("watch", flag.ContinueOnError)
		var tf traceFlags
		tf.register(fs)
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
