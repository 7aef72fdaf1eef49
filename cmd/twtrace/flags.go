package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

// flagGroup is a set of flags several commands share; a command registers only the
// groups that act in it, so its --help lists only what applies.
type flagGroup uint

const (
	groupOutput          flagGroup = 1 << iota // -o
	groupTracing                               // --events, --backend, --ringbuf-size
	groupDuration                              // --duration
	groupFilters                               // --port, --sport, --dport, --addr, --netns, -4, -6
	groupOwner                                 // --pid: only a tracer knows a socket's owner
	groupLog                                   // --log-level, --log-format: the tracing session's diagnostics
	groupWorkloadFilters                       // --cgroup, --pod, --container: in the kernel, by the socket's cgroup
	groupNames                                 // --cri-socket: names pods and containers
	groupTopWorkloads                          // --top-workloads
	groupCost                                  // --bpf-stats: the kernel's count of twtrace's own cost

	// workloadGroups are what commands that trace and count per workload take.
	workloadGroups = groupWorkloadFilters | groupNames | groupTopWorkloads

	// tracingGroups are what every command that traces takes.
	tracingGroups = groupTracing | groupDuration | groupFilters | groupOwner | groupLog
)

// sharedFlags says which shared flags each command takes (probe has its own two).
var sharedFlags = map[string]flagGroup{
	"watch":    groupOutput | tracingGroups | groupWorkloadFilters | groupNames | groupCost,
	"timewait": groupOutput | tracingGroups | workloadGroups | groupCost,
	"doctor":   groupOutput | tracingGroups | workloadGroups,
	"serve":    tracingGroups | workloadGroups | groupCost, // its output is /metrics
	"stat":     groupOutput | groupDuration | groupFilters | groupNames,
}

// traceFlags are the options commands share. A flag a command does not register keeps
// its default, so options() validates the same way for every command.
type traceFlags struct {
	output    string
	events    string
	backend   string
	duration  time.Duration
	ringbuf   string
	port      int
	sport     int
	dport     int
	addr      string
	pid       int
	netns     uint64
	ipv4      bool
	ipv6      bool
	logLevel  string
	logFormat string
	bpfStats  bool
	workload  workloadFlags
}

// newTraceFlags registers the shared flags that fs's command takes (sharedFlags).
func newTraceFlags(fs *flag.FlagSet) *traceFlags {
	groups := sharedFlags[fs.Name()]
	f := &traceFlags{output: "text", events: "all", backend: "auto", ringbuf: "4M", logLevel: "info", logFormat: "console"}
	if groups&groupOutput != 0 {
		fs.StringVar(&f.output, "o", f.output, "output format: text or json (one object per line)")
	}
	if groups&groupTracing != 0 {
		fs.StringVar(&f.events, "events", f.events, "event families, comma-separated: state, tw, overflow, reset, connect, or all")
		fs.StringVar(&f.backend, "backend", f.backend, "attach with: auto, fentry, kprobe or tracepoint")
		fs.StringVar(&f.ringbuf, "ringbuf-size", f.ringbuf, "kernel ring buffer size: a power of two, multiple of the page size (K and M suffixes)")
	}
	if groups&groupDuration != 0 {
		usage := "stop after tracing this long (e.g. 30s); 0 runs until interrupted"
		if groups&groupTracing == 0 {
			usage = "with --interval, stop after this long (e.g. 30s); 0 runs until interrupted"
		}
		fs.DurationVar(&f.duration, "duration", 0, usage)
	}
	if groups&groupFilters != 0 {
		fs.IntVar(&f.port, "port", 0, "only sockets with this local or remote port")
		fs.IntVar(&f.sport, "sport", 0, "only sockets with this local port")
		fs.IntVar(&f.dport, "dport", 0, "only sockets with this remote port")
		fs.StringVar(&f.addr, "addr", "", "only sockets with a local or remote address in this CIDR (e.g. 10.0.0.0/8, ::1/128)")
		fs.Uint64Var(&f.netns, "netns", 0, "only sockets in this network namespace (inode number, as lsns shows)")
		fs.BoolVar(&f.ipv4, "4", false, "only IPv4")
		fs.BoolVar(&f.ipv6, "6", false, "only IPv6")
	}
	if groups&groupOwner != 0 {
		fs.IntVar(&f.pid, "pid", 0, "only sockets owned by this process ID")
	}
	if groups&groupCost != 0 {
		fs.BoolVar(&f.bpfStats, "bpf-stats", false, "count twtrace's own kernel cost per program (the kernel's BPF statistics, on for twtrace's lifetime; "+
			"meanwhile every BPF program on the machine pays two clock reads per run: 84 ns on the machine of BENCHMARKS.md)")
	}
	f.workload.register(fs, groups)
	if groups&groupLog != 0 {
		fs.StringVar(&f.logLevel, "log-level", f.logLevel, "diagnostics on stderr: debug, info, warn or error")
		fs.StringVar(&f.logFormat, "log-format", f.logFormat, "diagnostics format: console or json")
	}
	return f
}

// notTaken explains, per command, flags it does not take that a user may expect there
// because other commands do.
var notTaken = map[string]map[string]string{
	"stat": {
		"pid":           "stat reads sockets from sock_diag, which does not know their owners; use watch or timewait",
		"events":        "stat does not trace",
		"backend":       "stat does not trace",
		"ringbuf-size":  "stat does not trace",
		"log-level":     "stat writes no diagnostics",
		"log-format":    "stat writes no diagnostics",
		"cgroup":        statNoCgroups,
		"pod":           statNoCgroups,
		"container":     statNoCgroups,
		"top-workloads": "stat lists every namespace, each named by the pod that holds it",
	},
	"serve": {
		"o":                "serve prints no events: it exports them on /metrics",
		"top-destinations": "renamed --top",
	},
}

const statNoCgroups = "stat reads sock_diag, which does not say which cgroup created a socket; give the pod's network namespace with --netns (stat names the pod of each)"

// commandFlags makes a command's flag set: --help prints usage, then the flags, to stdout.
func commandFlags(name, usage string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(stdout, usage)
		some := false
		fs.VisitAll(func(*flag.Flag) { some = true })
		if some {
			fmt.Fprint(stdout, "\nFlags:\n")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses a command's flags. After --help it returns flag.ErrHelp, which run
// turns into success: the usage is printed.
func parseFlags(fs *flag.FlagSet, args []string) error {
	usage := fs.Usage
	fs.Usage = func() {} // Parse calls it on every error: the error is returned instead, as one line
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		usage()
		return err
	}
	if err != nil {
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			if why, ok := notTaken[fs.Name()][name]; ok {
				return usagef("%s: %s", dashed(name), why)
			}
		}
		return usagef("%s", err)
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// dashed writes a flag as its help does: -o, --events.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func portFlag(name string, v int) (uint16, error) {
	if v == 0 {
		return 0, nil
	}
	if v < 1 || v > 65535 {
		return 0, usagef("--%s %d: a port is 1-65535", name, v)
	}
	return uint16(v), nil
}

// options turns validated flags into tracer options.
func (f *traceFlags) options() (tracer.Options, error) {
	var o tracer.Options
	var err error
	if f.output != "text" && f.output != "json" {
		return o, usagef("-o %q: want text or json", f.output)
	}
	if f.duration < 0 {
		return o, usagef("--duration %s: must not be negative", f.duration)
	}
	if _, err := newLogger(io.Discard, f.logLevel, f.logFormat); err != nil {
		return o, err // checked with the others, before any command acts
	}
	if o.Families, err = tracer.ParseFamilies(f.events); err != nil {
		return o, usagef("--events: %s", err)
	}
	if o.Backend, err = tracer.ParseBackend(f.backend); err != nil {
		return o, usagef("--backend: %s", err)
	}
	if o.RingBufferSize, err = parseSize(f.ringbuf); err != nil {
		return o, usagef("--ringbuf-size: %s", err)
	}
	if err := tracer.ValidateRingBufferSize(o.RingBufferSize, os.Getpagesize()); err != nil {
		return o, usagef("--ringbuf-size: %s", err)
	}
	if err := f.workload.validate(); err != nil {
		return o, err
	}
	flt := &o.Filter
	if flt.Port, err = portFlag("port", f.port); err != nil {
		return o, err
	}
	if flt.SPort, err = portFlag("sport", f.sport); err != nil {
		return o, err
	}
	if flt.DPort, err = portFlag("dport", f.dport); err != nil {
		return o, err
	}
	if f.pid < 0 || f.pid > 1<<22 {
		return o, usagef("--pid %d: not a process ID", f.pid)
	}
	flt.PID = uint32(f.pid)
	if f.netns > 1<<32-1 {
		return o, usagef("--netns %d: an inode number fits in 32 bits", f.netns)
	}
	flt.NetNS = uint32(f.netns)
	if f.ipv4 && f.ipv6 {
		return o, usagef("-4 and -6 together match nothing: give one or neither")
	}
	if f.ipv4 {
		flt.Family = 4
	} else if f.ipv6 {
		flt.Family = 6
	}
	if f.addr != "" {
		if flt.Addr, err = parseCIDR(f.addr); err != nil {
			return o, usagef("--addr: %s", err)
		}
		if (flt.Family == 6 && flt.Addr.Addr().Is4()) || (flt.Family == 4 && flt.Addr.Addr().Is6()) {
			return o, usagef("--addr %s conflicts with -%d", f.addr, flt.Family)
		}
	}
	return o, nil
}

// parseCIDR accepts a prefix or a bare address (a /32 or /128).
func parseCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: zones are not supported", s)
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a valid CIDR (address/prefix length, e.g. 10.0.0.0/8)", s)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: zones are not supported", s)
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:10.0.0.0/104 is 10.0.0.0/8, as a bare mapped address is
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// parseSize parses a byte count with an optional K or M suffix.
func parseSize(s string) (uint32, error) {
	orig := s
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n*mult > 1<<31 {
		return 0, fmt.Errorf("%q is not a size between 1 and 2G (e.g. 65536, 256K, 4M)", orig)
	}
	return uint32(n * mult), nil
}
