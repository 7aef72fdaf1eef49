package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twtrace/twtrace/internal/doctor"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
	"golang.org/x/sys/unix"
)

type doctorReport struct {
	Kernel     *string       `json:"kernel"` // null offline
	Measured   *float64      `json:"measured_seconds"`
	Offline    bool          `json:"offline"`
	Input      *string       `json:"input"`
	Unreadable uint64        `json:"unreadable_lines"`
	Namespaces []doctorNetns `json:"namespaces"`
}

type doctorNetns struct {
	NetNS    uint32            `json:"netns"`
	HeldBy   *workloadNames    `json:"workload"` // the pod holding the namespace; null when none does
	Sysctls  map[string]string `json:"sysctls"`  // null offline
	Traced   *doctorTraced     `json:"traced"`   // null without a measurement
	Findings []doctor.Finding  `json:"findings"`
}

// doctorTraced is what the events of the window measured in a namespace: null where the
// family that measures it was not traced.
type doctorTraced struct {
	Overflows   *uint64          `json:"overflows"`
	TimeWait    *lifetimeSummary `json:"time_wait_lifetimes"` // expired in TIME_WAIT
	FinWait2    *lifetimeSummary `json:"fin_wait2_lifetimes"` // expired in FIN_WAIT2
	KilledByRST *uint64          `json:"killed_by_rst"`
	// connect() calls that failed, by errno name, and timewait sockets connect() took over
	ConnectFailures map[string]uint64 `json:"connect_failures"`
	Reused          *uint64           `json:"reused"`
	// the namespace's busiest workloads (--top-workloads), and how many others it has
	Workloads     []workloadJSON `json:"workloads"`
	MoreWorkloads int            `json:"more_workloads"`
}

type lifetimeSummary struct {
	Count uint64   `json:"count"`
	P50Ms *float64 `json:"p50_ms"` // null when none was measured
}

func tracedOf(me *doctor.Measurement, traced tracer.Families) *doctorTraced {
	t := &doctorTraced{}
	if traced&tracer.FamilyOverflow != 0 {
		t.Overflows = &me.Overflows
	}
	if traced&tracer.FamilyTW != 0 {
		summary := func(n uint64, p50 time.Duration) *lifetimeSummary {
			l := &lifetimeSummary{Count: n}
			if n > 0 {
				ms := float64(p50) / float64(time.Millisecond)
				l.P50Ms = &ms
			}
			return l
		}
		t.TimeWait, t.FinWait2 = summary(me.TimeWaitCount, me.TimeWaitP50), summary(me.FinWait2Count, me.FinWait2P50)
		t.KilledByRST = &me.KilledByRST
		t.Reused = &me.Reused
	}
	if traced&tracer.FamilyConnect != 0 {
		t.ConnectFailures = me.ConnectFailures
	}
	return t
}

func doctorCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := commandFlags("doctor", "Usage: twtrace doctor [flags]\n\nRead the TIME_WAIT-related sysctls of each namespace and the kernel version and print findings\nwith their evidence; with --duration, trace for that long first and back the findings with\nmeasurements (overflows, peak occupancy, lifetimes, ephemeral port use per destination).", stdout)
	f := newTraceFlags(fs)
	interval := fs.Duration("interval", 0, "measure and report every interval until interrupted (or --duration)")
	input := fs.String("input", "", "diagnose a recording of `watch -o json` (a file, or - for standard input) instead of tracing; needs no privileges")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := f.options()
	if err != nil {
		return err
	}
	opts.CountTransitions = true // doctor needs no state event, at most their counts
	if *interval < 0 {
		return usagef("--interval %s: must not be negative", *interval)
	}
	if *input != "" {
		if err := tracingOnly(fs, "backend", "ringbuf-size", "events", "duration", "interval", "cri-socket"); err != nil {
			return err
		}
		filter := replayFilter{Filter: opts.Filter, Workload: f.workload.recorded()}
		return doctorReplay(*input, filter, f.workload.top, f.output == "json", stdin, stdout, stderr)
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	names, cgroupFilter, err := f.workload.open(log)
	if err != nil {
		return err
	}
	defer names.Close()
	opts.Filter.Cgroup = cgroupFilter
	src := snapshot.NewSource(snapshot.Options{Keep: window.Keep(opts.Filter)})
	inodes, err := doctorNamespaces(src, opts.Filter.NetNS)
	if err != nil {
		return err
	}
	kernel := kernelRelease()
	if f.duration == 0 && *interval == 0 {
		r, err := settingsReport(kernel, src, names, inodes)
		if err != nil {
			return err
		}
		return writeDoctor(stdout, r, f.output == "json")
	}

	m := newMeasurer(src, inodes, src.Baselines(inodes)) // the kernel's counters are read before tracing starts
	m.names, m.topWorkloads = names, f.workload.top
	sess, err := startSession(f, opts, stderr)
	if err != nil {
		return err
	}
	defer sess.Close()
	m.traced = sess.t.Families()
	done := make(chan error, 1)
	go func() { done <- sess.t.Run(sess.ctx, m.win.Add, nil) }()
	sample := time.NewTicker(time.Second)
	defer sample.Stop()
	var every <-chan time.Time
	if *interval > 0 {
		t := time.NewTicker(*interval)
		defer t.Stop()
		every = t.C
	}
	report := func() error {
		return writeDoctor(stdout, m.report(kernel), f.output == "json")
	}
	for {
		select {
		case <-sample.C:
			m.sample()
		case <-every:
			if err := report(); err != nil {
				return err
			}
		case err := <-done:
			if err != nil {
				return err
			}
			return report()
		}
	}
}

// doctorNamespaces lists the namespaces doctor examines: the one filtered on, or all.
func doctorNamespaces(src *snapshot.Source, only uint32) ([]uint32, error) {
	if only != 0 {
		if _, err := src.Index().Find(only); err != nil {
			return nil, err
		}
		return []uint32{only}, nil
	}
	all, err := src.Namespaces()
	if err != nil {
		return nil, err
	}
	inodes := make([]uint32, len(all))
	for i, ns := range all {
		inodes[i] = ns.Inode
	}
	return inodes, nil
}

func kernelRelease() string {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	return unix.ByteSliceToString(uts.Release[:])
}

// settingsReport diagnoses the namespaces' settings alone, without measuring.
func settingsReport(kernel string, src *snapshot.Source, names namer, inodes []uint32) (doctorReport, error) {
	r := doctorReport{Kernel: &kernel}
	heldBy := namespaceWorkloads(names, inodes)
	for _, inode := range inodes {
		n, err := src.Settings(inode)
		if err != nil {
			return r, fmt.Errorf("netns %d: %w", inode, err)
		}
		r.Namespaces = append(r.Namespaces, doctorNetns{NetNS: inode, HeldBy: namespaceNames(heldBy, inode), Sysctls: n.Sysctls,
			Findings: doctor.Diagnose(kernel, n.Sysctls, nil)})
	}
	return r, nil
}

func writeDoctor(w io.Writer, r doctorReport, asJSON bool) error {
	if !asJSON {
		writeDoctorText(w, r)
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// measurer collects what doctor measures over one window: the events (in the window),
// the TIME_WAIT peak sampled each second, the kernel's counters at the window's start.
type measurer struct {
	src    snapshotter
	inodes []uint32
	win    *window.Window
	traced tracer.Families
	names  namer // nil: every workload unknown

	topWorkloads int

	mu   sync.Mutex
	peak map[uint32]int64
}

func newMeasurer(src snapshotter, inodes []uint32, baseline map[uint32]snapshot.Counters) *measurer {
	m := &measurer{src: src, inodes: inodes, peak: map[uint32]int64{}, topWorkloads: defaultTopWorkloads}
	m.win = window.New(time.Now(), baseline)
	m.sample()
	return m
}

// sample reads each namespace now and keeps its TIME_WAIT peak; it returns what it read.
func (m *measurer) sample() map[uint32]*snapshot.Namespace {
	snaps := map[uint32]*snapshot.Namespace{}
	for _, inode := range m.inodes {
		if n, err := m.src.Take(inode); err == nil {
			snaps[inode] = n
		}
	}
	m.mu.Lock()
	for inode, n := range snaps {
		m.peak[inode] = max(m.peak[inode], int64(n.TimeWaitTable))
	}
	m.mu.Unlock()
	return snaps
}

// report diagnoses each namespace with what the window measured, and starts a new window.
func (m *measurer) report(kernel string) doctorReport {
	snaps := m.sample()
	baseline := map[uint32]snapshot.Counters{}
	for inode, n := range snaps {
		baseline[inode] = n.Counters
	}
	a := m.win.Restart(time.Now(), baseline) // this window ends where the next one's counters start
	m.mu.Lock()
	peak := m.peak
	m.peak = map[uint32]int64{}
	m.mu.Unlock()

	now := time.Now()
	secs := now.Sub(a.Since).Seconds()
	r := doctorReport{Kernel: &kernel, Measured: &secs}
	rows := workloadRows(a, m.names, snaps, now)
	heldBy := namespaceWorkloads(m.names, m.inodes)
	for _, inode := range m.inodes {
		n := snaps[inode]
		if n == nil {
			continue // gone since the start
		}
		me := measurement(a, inode, n, m.traced, now)
		me.PeakLive = peak[inode]
		me.PortFailuresBy = portFailuresBy(rows, inode)
		traced := tracedOf(me, m.traced)
		traced.Workloads, traced.MoreWorkloads = workloadsIn(rows, inode, m.topWorkloads, m.traced)
		r.Namespaces = append(r.Namespaces, doctorNetns{NetNS: inode, HeldBy: namespaceNames(heldBy, inode), Sysctls: n.Sysctls,
			Traced: traced, Findings: doctor.Diagnose(kernel, n.Sysctls, me)})
	}
	return r
}

// workloadsIn are the busiest top of rows in namespace inode, and how many others it has.
func workloadsIn(rows []workloadRow, inode uint32, top int, traced tracer.Families) ([]workloadJSON, int) {
	out, more := []workloadJSON{}, 0
	for _, row := range rows {
		switch {
		case row.NetNS != inode:
		case len(out) < top:
			out = append(out, workloadRowJSON(row, traced))
		default:
			more++
		}
	}
	return out, more
}

// doctorReplay diagnoses a recording: what its events measured, without the settings and
// live state a recording does not hold.
func doctorReplay(name string, filter replayFilter, topWorkloads int, asJSON bool, stdin io.Reader, stdout, stderr io.Writer) error {
	a, rec, err := replayWindow(name, stdin, filter)
	if err != nil {
		return err
	}
	st := recordingStatus(rec)
	secs := rec.Until.Sub(rec.Since).Seconds()
	r := doctorReport{Measured: &secs, Offline: true, Input: &rec.Name, Unreadable: rec.Unreadable}
	rows := workloadRows(a, rec.Names, nil, rec.Until)
	for _, inode := range namespacesOf(a, recordingNamespace(filter.Filter, rec), true) {
		me := measurement(a, inode, nil, st.Traced, rec.Until)
		me.PortFailuresBy = portFailuresBy(rows, inode)
		traced := tracedOf(me, st.Traced)
		traced.Workloads, traced.MoreWorkloads = workloadsIn(rows, inode, topWorkloads, st.Traced)
		r.Namespaces = append(r.Namespaces, doctorNetns{NetNS: inode, Traced: traced,
			Findings: doctor.DiagnoseTraced(me)})
	}
	reportReplay(stderr, rec)
	return writeDoctor(stdout, r, asJSON)
}

// measurement is what the window, ending at until, saw in namespace inode, next to its
// snapshot n (nil offline).
func measurement(a *window.Aggregate, inode uint32, n *snapshot.Namespace, traced tracer.Families, until time.Time) *doctor.Measurement {
	o := a.Occupancy(inode, n)
	me := &doctor.Measurement{Window: until.Sub(a.Since), CounterDelta: o.CounterDelta,
		Overflows: o.Overflows, OverflowsUntraced: traced&tracer.FamilyOverflow == 0}
	if n != nil {
		for d, live := range n.TimeWait {
			if live > me.TopLive {
				me.TopDestination, me.TopLive = d, live
			}
		}
	}
	me.ConnectUntraced, me.ReuseUntraced = traced&tracer.FamilyConnect == 0, traced&tracer.FamilyTW == 0
	me.PortFailures = portFailures(a, inode, n)
	me.ConnectFailures = map[string]uint64{}
	for k, c := range a.ConnectFails {
		if k.Dest.NetNS == inode {
			me.ConnectFailures[k.Errno] += c
		}
	}
	for d, c := range a.Reused {
		if d.NetNS == inode {
			me.Reused += c
		}
	}
	// lifetimes are not split by namespace: every namespace measured shares them
	for k, h := range a.Lifetimes {
		switch {
		case k.Cause == tracer.CauseExpired && k.Substate == tracer.StateTimeWait:
			me.TimeWaitCount, me.TimeWaitP50 = h.Count, h.Percentile(0.5)
		case k.Cause == tracer.CauseExpired && k.Substate == tracer.StateFinWait2:
			me.FinWait2Count, me.FinWait2P50 = h.Count, h.Percentile(0.5)
		case k.Cause == tracer.CauseKilled && k.Detail == tracer.DetailRST:
			me.KilledByRST += h.Count
		}
	}
	return me
}

// portFailures lists the destinations of namespace inode that connect() found no port
// towards in the window, most failures first, next to their live TIME_WAIT sockets
// (unknown without a snapshot).
func portFailures(a *window.Aggregate, inode uint32, n *snapshot.Namespace) []doctor.PortFailure {
	var out []doctor.PortFailure
	for k, c := range a.ConnectFails {
		if k.Dest.NetNS != inode || k.Errno != "EADDRNOTAVAIL" {
			continue
		}
		p := doctor.PortFailure{Dest: k.Dest, Failed: c, Reused: a.Reused[k.Dest], Live: -1}
		if n != nil {
			p.Live = n.TimeWait[k.Dest]
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(x, y doctor.PortFailure) int {
		return cmp.Or(cmp.Compare(y.Failed, x.Failed), compareDestinations(x.Dest, y.Dest))
	})
	return out
}

// portFailuresBy names the workloads of namespace inode whose connect() found no free
// local port, most failures first.
func portFailuresBy(rows []workloadRow, inode uint32) []doctor.WorkloadFailures {
	var out []doctor.WorkloadFailures
	for _, r := range rows {
		if n := r.ConnectFails["EADDRNOTAVAIL"]; r.NetNS == inode && n > 0 {
			out = append(out, doctor.WorkloadFailures{Name: r.Name(), Failed: n})
		}
	}
	slices.SortFunc(out, func(x, y doctor.WorkloadFailures) int {
		return cmp.Or(cmp.Compare(y.Failed, x.Failed), cmp.Compare(x.Name, y.Name))
	})
	return out
}

func writeDoctorText(w io.Writer, r doctorReport) {
	if r.Offline {
		fmt.Fprintf(w, "twtrace doctor: replayed from %s, measured for %gs (offline: the settings, the live sockets and the kernel's counters are not in a recording)", *r.Input, *r.Measured)
		if r.Unreadable > 0 {
			fmt.Fprintf(w, "; %d unreadable lines", r.Unreadable)
		}
	} else {
		fmt.Fprintf(w, "twtrace doctor: Linux %s", *r.Kernel)
		if r.Measured != nil {
			fmt.Fprintf(w, ", measured for %gs", *r.Measured)
		} else {
			fmt.Fprintf(w, ", settings only (add --duration 30s to back findings with measurements)")
		}
	}
	fmt.Fprintln(w)
	for _, n := range r.Namespaces {
		fmt.Fprintf(w, "\nnetns %d", n.NetNS)
		if n.HeldBy != nil {
			fmt.Fprintf(w, " (held by %s)", n.HeldBy.Name)
		}
		fmt.Fprintf(w, "\n ")
		if n.Sysctls == nil {
			fmt.Fprintf(w, " sysctls: not available offline")
		}
		for _, name := range snapshot.TimewaitSysctls {
			if n.Sysctls == nil {
				break
			}
			v, ok := n.Sysctls[name]
			if !ok {
				v = "absent"
			}
			fmt.Fprintf(w, " %s=%s", name, strings.ReplaceAll(v, " ", "-"))
		}
		fmt.Fprintln(w)
		if n.Traced != nil {
			writeTracedLine(w, n.Traced)
		}
		for _, f := range n.Findings {
			fmt.Fprintf(w, "  [%s] %s: %s\n", f.Severity, f.ID, f.Title)
			fmt.Fprintf(w, "      evidence: %s\n", f.Evidence)
			if f.Advice != "" {
				fmt.Fprintf(w, "      advice:   %s\n", f.Advice)
			}
		}
	}
}

// writeTracedLine prints what the window's events measured in a namespace.
func writeTracedLine(w io.Writer, t *doctorTraced) {
	count := func(n *uint64) string {
		if n == nil {
			return "unknown (not traced)"
		}
		return fmt.Sprint(*n)
	}
	lifetimes := func(l *lifetimeSummary) string {
		switch {
		case l == nil:
			return "unknown (not traced)"
		case l.P50Ms == nil:
			return "none"
		}
		return fmt.Sprintf("%d, median %.1fms", l.Count, *l.P50Ms)
	}
	failures := func(m map[string]uint64) string {
		switch {
		case m == nil:
			return "unknown (not traced)"
		case len(m) == 0:
			return "none"
		}
		return errnoCounts(m)
	}
	fmt.Fprintf(w, "  traced: overflows %s; expired TIME_WAIT lifetimes %s; FIN_WAIT2 %s; killed by a reset %s; connect() failures %s; reused by connect() %s\n",
		count(t.Overflows), lifetimes(t.TimeWait), lifetimes(t.FinWait2), count(t.KilledByRST), failures(t.ConnectFailures), count(t.Reused))
	for _, wl := range t.Workloads {
		name := "unknown workload"
		if wl.Workload != nil {
			name = wl.Workload.Name
		}
		fmt.Fprintf(w, "  workload %s: holds %s timewait sockets (born while tracing), created %s", name, count(wl.TimeWaitNow), count(wl.Created))
		if wl.Rate != nil {
			fmt.Fprintf(w, " (%.1f/s)", *wl.Rate)
		}
		fmt.Fprintf(w, ", overflows %s, resets sent %s, received %s, connect() failures %s", count(wl.Overflows), count(wl.ResetsSent), count(wl.ResetsRecv),
			failures(wl.ConnectFailures))
		switch f := wl.Forecast; {
		case f == nil:
		case f.FullInS != nil && *f.FullInS == 0:
			fmt.Fprintf(w, "; at this rate alone the timewait table is full now")
		case f.FullInS != nil:
			fmt.Fprintf(w, "; at this rate alone it fills the timewait table in ~%.0fs", *f.FullInS)
		default:
			fmt.Fprintf(w, "; at this rate alone it settles near %.0f timewait sockets", f.SteadyState)
		}
		fmt.Fprintln(w)
	}
	if t.MoreWorkloads > 0 {
		fmt.Fprintf(w, "  and %d more workloads (--top-workloads)\n", t.MoreWorkloads)
	}
}
