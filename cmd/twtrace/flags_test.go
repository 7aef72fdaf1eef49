package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/tracer"
)

// unitOptions parses args the way watch does and returns the tracer options.
func unitOptions(args []string) (tracer.Options, error) {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	f := newTraceFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return tracer.Options{}, err
	}
	return f.options()
}

// unitDefaults are the options watch gets with no flags; mod adjusts them per case.
func unitDefaults(mod func(*tracer.Options)) tracer.Options {
	o := tracer.Options{
		Families:       tracer.AllFamilies,
		Backend:        tracer.BackendAuto,
		RingBufferSize: 4 << 20,
	}
	if mod != nil {
		mod(&o)
	}
	return o
}

func TestFlagsOptions(t *testing.T) {
	tests := []struct {
		args []string
		want tracer.Options
	}{
		{nil, unitDefaults(nil)},
		{[]string{"-o", "json", "--duration", "30s", "--log-level", "debug"}, unitDefaults(nil)},
		{[]string{"--port", "443"}, unitDefaults(func(o *tracer.Options) { o.Filter.Port = 443 })},
		{[]string{"--port", "65535"}, unitDefaults(func(o *tracer.Options) { o.Filter.Port = 65535 })},
		{[]string{"--sport", "8080", "--dport", "1"}, unitDefaults(func(o *tracer.Options) { o.Filter.SPort, o.Filter.DPort = 8080, 1 })},
		{[]string{"--addr", "10.1.2.3/8"}, unitDefaults(func(o *tracer.Options) { o.Filter.Addr = netip.MustParsePrefix("10.0.0.0/8") })},
		{[]string{"--addr", "10.1.2.3"}, unitDefaults(func(o *tracer.Options) { o.Filter.Addr = netip.MustParsePrefix("10.1.2.3/32") })},
		{[]string{"--addr", "::1"}, unitDefaults(func(o *tracer.Options) { o.Filter.Addr = netip.MustParsePrefix("::1/128") })},
		{[]string{"--addr", "2001:db8::1/32"}, unitDefaults(func(o *tracer.Options) { o.Filter.Addr = netip.MustParsePrefix("2001:db8::/32") })},
		{[]string{"--addr", "::ffff:10.1.2.3"}, unitDefaults(func(o *tracer.Options) { o.Filter.Addr = netip.MustParsePrefix("10.1.2.3/32") })},
		{[]string{"--addr", "::ffff:10.1.2.3/104"}, unitDefaults(func(o *tracer.Options) { o.Filter.Addr = netip.MustParsePrefix("10.0.0.0/8") })},
		{[]string{"-4", "--addr", "::ffff:10.1.2.3/128"}, unitDefaults(func(o *tracer.Options) {
			o.Filter.Family, o.Filter.Addr = 4, netip.MustParsePrefix("10.1.2.3/32")
		})},
		{[]string{"--addr", "::ffff:0:0/95"}, unitDefaults(func(o *tracer.Options) { o.Filter.Addr = netip.MustParsePrefix("::fffe:0:0/95") })},
		{[]string{"-4"}, unitDefaults(func(o *tracer.Options) { o.Filter.Family = 4 })},
		{[]string{"-6"}, unitDefaults(func(o *tracer.Options) { o.Filter.Family = 6 })},
		{[]string{"-4", "--addr", "192.168.0.0/16"}, unitDefaults(func(o *tracer.Options) {
			o.Filter.Family, o.Filter.Addr = 4, netip.MustParsePrefix("192.168.0.0/16")
		})},
		{[]string{"-6", "--addr", "::1/128"}, unitDefaults(func(o *tracer.Options) {
			o.Filter.Family, o.Filter.Addr = 6, netip.MustParsePrefix("::1/128")
		})},
		{[]string{"--pid", "1234"}, unitDefaults(func(o *tracer.Options) { o.Filter.PID = 1234 })},
		{[]string{"--netns", "4026531840"}, unitDefaults(func(o *tracer.Options) { o.Filter.NetNS = 4026531840 })},
		{[]string{"--netns", "4294967295"}, unitDefaults(func(o *tracer.Options) { o.Filter.NetNS = 4294967295 })},
		{[]string{"--events", "state,reset"}, unitDefaults(func(o *tracer.Options) { o.Families = tracer.FamilyState | tracer.FamilyReset })},
		{[]string{"--events", "tw"}, unitDefaults(func(o *tracer.Options) { o.Families = tracer.FamilyTW })},
		{[]string{"--backend", "fentry"}, unitDefaults(func(o *tracer.Options) { o.Backend = tracer.BackendFentry })},
		{[]string{"--backend", "kprobe"}, unitDefaults(func(o *tracer.Options) { o.Backend = tracer.BackendKprobe })},
		{[]string{"--backend", "tracepoint"}, unitDefaults(func(o *tracer.Options) { o.Backend = tracer.BackendTracepoint })},
		{[]string{"--ringbuf-size", "256K"}, unitDefaults(func(o *tracer.Options) { o.RingBufferSize = 256 << 10 })},
		{[]string{"--ringbuf-size", "4M"}, unitDefaults(func(o *tracer.Options) { o.RingBufferSize = 4 << 20 })},
		{[]string{"--ringbuf-size", "65536"}, unitDefaults(func(o *tracer.Options) { o.RingBufferSize = 65536 })},
		{[]string{"--port=80", "-4", "--pid=1", "--events=all"}, unitDefaults(func(o *tracer.Options) {
			o.Filter.Port, o.Filter.Family, o.Filter.PID = 80, 4, 1
		})},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got, err := unitOptions(tt.args)
			if err != nil {
				t.Fatalf("options: %v", err)
			}
			if got != tt.want {
				t.Errorf("options:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestFlagsOptionsErrors(t *testing.T) {
	tests := []struct {
		args []string
		name string // what the message must mention
	}{
		{[]string{"--port", "70000"}, "--port 70000"},
		{[]string{"--port", "-1"}, "--port -1"},
		{[]string{"--sport", "65536"}, "--sport 65536"},
		{[]string{"--dport", "-2"}, "--dport -2"},
		{[]string{"--addr", "10.0.0.0/33"}, "--addr"},
		{[]string{"--addr", "banana"}, "--addr"},
		{[]string{"--addr", "fe80::1%eth0/64"}, "--addr"},
		{[]string{"--duration", "-1s"}, "--duration -1s"},
		{[]string{"-o", "yaml"}, "-o \"yaml\""},
		{[]string{"--events", "bogus"}, "--events"},
		{[]string{"--events", ""}, "--events"},
		{[]string{"--backend", "ebpf"}, "--backend"},
		{[]string{"--ringbuf-size", "1000"}, "--ringbuf-size"},
		{[]string{"--ringbuf-size", "3M"}, "--ringbuf-size"},
		{[]string{"--ringbuf-size", "0"}, "--ringbuf-size"},
		{[]string{"--ringbuf-size", "4G"}, "--ringbuf-size"},
		{[]string{"--ringbuf-size", "4096M"}, "--ringbuf-size"},
		{[]string{"--ringbuf-size", "2048"}, "--ringbuf-size"},
		{[]string{"--ringbuf-size", "big"}, "--ringbuf-size"},
		{[]string{"--ringbuf-size", "-4K"}, "--ringbuf-size"},
		{[]string{"--ringbuf-size", "99999999999999999999"}, "--ringbuf-size"},
		{[]string{"--duration", "soon"}, "-duration"},
		{[]string{"--duration", "1d"}, "-duration"},
		{[]string{"--addr", "10.0.0.1/8/1"}, "--addr"},
		{[]string{"--addr", "fe80::1%eth0"}, "--addr"},
		{[]string{"--addr", "[::1]"}, "--addr"},
		{[]string{"--addr", "１０.0.0.1"}, "--addr"},
		{[]string{"-4", "--addr", "::ffff:0:0/95"}, "--addr ::ffff:0:0/95 conflicts with -4"},
		{[]string{"--events", "state,bogus"}, "--events"},
		{[]string{"--events", "State"}, "--events"},
		{[]string{"--backend", "AUTO"}, "--backend"},
		{[]string{"--backend", ""}, "--backend"},
		{[]string{"--port", "99999999999999999999"}, "-port"},
		{[]string{"--port", "0x10000"}, "--port 65536"},
		{[]string{"-4", "-6"}, "-4 and -6"},
		{[]string{"-4", "--addr", "::1/128"}, "--addr ::1/128 conflicts with -4"},
		{[]string{"-6", "--addr", "10.0.0.1"}, "--addr 10.0.0.1 conflicts with -6"},
		{[]string{"--pid", "-5"}, "--pid -5"},
		{[]string{"--pid", "99999999"}, "--pid 99999999"},
		{[]string{"--netns", "4294967296"}, "--netns 4294967296"},
		{[]string{"--bogus"}, "bogus"},
		{[]string{"--port", "http"}, "port"},
		{[]string{"extra"}, `"extra"`},
		{[]string{"-4", "extra", "-6"}, `"extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got, err := unitOptions(tt.args)
			if err == nil {
				t.Fatalf("options = %+v, want a usage error", got)
			}
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("error %v (%T) is not a usageError", err, err)
			}
			if !strings.Contains(err.Error(), tt.name) {
				t.Errorf("error %q does not mention %q", err, tt.name)
			}
		})
	}
}

func TestFlagsParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"65536", 65536, true},
		{"256K", 256 << 10, true},
		{"4M", 4 << 20, true},
		{"2048M", 1 << 31, true},
		{"2049M", 0, false},
		{"4k", 0, false},
		{"K", 0, false},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5M", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestRunDispatch(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		usage      bool   // a usageError is expected
		wantStdout string // exact, when not ""
		stdoutHas  string
		stderrHas  string
	}{
		{name: "no args", args: nil, usage: true, stderrHas: "Usage:"},
		{name: "version", args: []string{"version"}, stdoutHas: "twtrace dev\ncommit  "},
		{name: "version --help", args: []string{"version", "--help"}, stdoutHas: "Usage: twtrace version\n\nPrint twtrace's version"},
		{name: "version takes no flag", args: []string{"version", "--short"}, usage: true},
		{name: "version takes no argument", args: []string{"version", "now"}, usage: true},
		{name: "--help", args: []string{"--help"}, stdoutHas: "twtrace watch [flags]"},
		{name: "-h", args: []string{"-h"}, stdoutHas: "twtrace watch [flags]"},
		{name: "help", args: []string{"help"}, stdoutHas: "twtrace watch [flags]"},
		// a command's --help prints its usage (to the process's stdout) and succeeds
		{name: "watch --help", args: []string{"watch", "--help"}},
		{name: "timewait -h", args: []string{"timewait", "-h"}},
		{name: "stat --help", args: []string{"stat", "--help"}},
		{name: "doctor --help", args: []string{"doctor", "--help"}},
		{name: "serve --help", args: []string{"serve", "--help"}},
		{name: "probe --help", args: []string{"probe", "--help"}},
		// These fail on the flags, before any privilege check or kernel access.
		{name: "watch bad flag", args: []string{"watch", "--port", "70000"}, usage: true},
		{name: "watch unknown flag", args: []string{"watch", "--bogus"}, usage: true},
		{name: "probe bad output", args: []string{"probe", "-o", "yaml"}, usage: true},
		{name: "probe bad backend", args: []string{"probe", "--backend", "ebpf"}, usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(tt.args, &stdout, &stderr)
			var ue usageError
			if tt.usage != errors.As(err, &ue) {
				t.Fatalf("run(%q) = %v (%T), want usage error: %v", tt.args, err, err, tt.usage)
			}
			if !tt.usage && err != nil {
				t.Fatalf("run(%q) = %v, want nil", tt.args, err)
			}
			if tt.wantStdout != "" && stdout.String() != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stdout.String(), tt.stdoutHas) {
				t.Errorf("stdout = %q, want it to contain %q", stdout.String(), tt.stdoutHas)
			}
			if !strings.Contains(stderr.String(), tt.stderrHas) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.stderrHas)
			}
		})
	}
}

// An unknown command is two lines on stderr: what was wrong, and where to look.
func TestUnknownCommandTwoLines(t *testing.T) {
	for _, cmd := range []string{"frobnicate", "Watch", "--bogus", "-o", "stats", "watch\n", "\xff"} {
		t.Run(strconv.Quote(cmd), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run([]string{cmd, "--help"}, &stdout, &stderr)
			if stdout.Len() != 0 || stderr.Len() != 0 {
				t.Errorf("run printed stdout %q, stderr %q before exiting", stdout.String(), stderr.String())
			}
			if code := exitCode(err, &stderr); code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			want := "twtrace: unknown command " + oneLine(strconv.Quote(cmd)) + "\nRun 'twtrace --help' for usage.\n"
			if stderr.String() != want {
				t.Errorf("stderr %q, want %q", stderr.String(), want)
			}
		})
	}
}

// Each command's --help lists exactly the flags it takes, and it takes no other.
func TestCommandFlagsListed(t *testing.T) {
	filters := []string{"4", "6", "addr", "dport", "netns", "port", "sport"}
	tracing := append([]string{"backend", "duration", "events", "log-format", "log-level", "pid", "ringbuf-size"}, filters...)
	workloadFilters := []string{"cgroup", "container", "cri-socket", "pod"}
	workloads := append([]string{"top-workloads"}, workloadFilters...)
	tests := []struct {
		cmd   string
		flags []string
	}{
		{"watch", slices.Concat([]string{"o", "bpf-stats"}, tracing, workloadFilters)},
		{"timewait", slices.Concat([]string{"o", "interval", "top", "input", "bpf-stats"}, tracing, workloads)},
		{"doctor", slices.Concat([]string{"o", "interval", "input"}, tracing, workloads)},
		{"serve", slices.Concat([]string{"listen", "top", "bpf-stats"}, tracing, workloads)},
		{"stat", slices.Concat([]string{"o", "duration", "interval", "cri-socket"}, filters)},
		{"probe", []string{"o", "backend", "cost", "cost-connections"}},
		{"version", nil},
	}
	listed := regexp.MustCompile(`(?m)^  -(\S+)`)
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run([]string{tt.cmd, "--help"}, &stdout, &stderr); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range listed.FindAllStringSubmatch(stdout.String(), -1) {
				got = append(got, m[1])
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tt.flags))
			if !slices.Equal(got, want) {
				t.Errorf("--help lists %q, want %q:\n%s", got, want, stdout.String())
			}
			if !strings.HasPrefix(stdout.String(), "Usage: twtrace "+tt.cmd) || stderr.Len() != 0 {
				t.Errorf("stdout %q, stderr %q: want the usage on stdout only", stdout.String(), stderr.String())
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		want       int
		wantStderr string
	}{
		{"nil", nil, 0, ""},
		{"usage", usagef("bad %s", "flag"), 2, "twtrace: bad flag\n"},
		{"wrapped usage", fmt.Errorf("watch: %w", usagef("bad")), 2, "twtrace: bad\n"},
		{"unavailable", errUnavailable{errors.New("no BTF")}, 3, "twtrace: not available on this kernel: no BTF\n"},
		{"wrapped unavailable", fmt.Errorf("probe: %w", errUnavailable{errors.New("x")}), 3, "twtrace: not available on this kernel: x\n"},
		{"other", errors.New("boom"), 1, "twtrace: boom\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := exitCode(tt.err, &stderr); got != tt.want {
				t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
			if stderr.String() != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}
