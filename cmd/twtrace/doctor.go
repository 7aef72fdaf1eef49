package main

import (
	"encoding/json"
	"fmt"
	"io"
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
	Kernel     string        `json:"kernel"`
	Measured   *float64      `json:"measured_seconds"`
	Namespaces []doctorNetns `json:"namespaces"`
}

type doctorNetns struct {
	NetNS    uint32            `json:"netns"`
	Sysctls  map[string]string `json:"sysctls"`
	Findings []doctor.Finding  `json:"findings"`
}

func doctorCmd(args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("doctor", "Usage: twtrace doctor [flags]\n\nRead the TIME_WAIT-related sysctls of each namespace and the kernel version and print findings\nwith their evidence; with --duration, trace for that long first and back the findings with\nmeasurements (overflows, peak occupancy, lifetimes, ephemeral port use per destination).", stdout)
	f := newTraceFlags(fs)
	interval := fs.Duration("interval", 0, "measure and report every interval until interrupted (or --duration)")
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
	src := snapshot.NewSource(snapshot.Options{Keep: window.Keep(opts.Filter)})
	inodes, err := doctorNamespaces(src, opts.Filter.NetNS)
	if err != nil {
		return err
	}
	kernel := kernelRelease()
	if f.duration == 0 && *interval == 0 {
		r, err := settingsReport(kernel, src, inodes)
		if err != nil {
			return err
		}
		return writeDoctor(stdout, r, f.output == "json")
	}

	m := newMeasurer(src, inodes, src.Baselines(inodes)) // the kernel's counters are read before tracing starts
	sess, err := startSession(f, opts, stderr)
	if err != nil {
		return err
	}
	defer sess.Close()
	m.untraced = sess.t.Families()&tracer.FamilyOverflow == 0
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
func settingsReport(kernel string, src *snapshot.Source, inodes []uint32) (doctorReport, error) {
	r := doctorReport{Kernel: kernel}
	for _, inode := range inodes {
		n, err := src.Settings(inode)
		if err != nil {
			return r, fmt.Errorf("netns %d: %w", inode, err)
		}
		r.Namespaces = append(r.Namespaces, doctorNetns{inode, n.Sysctls, doctor.Diagnose(kernel, n.Sysctls, nil)})
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
	src      snapshotter
	inodes   []uint32
	win      *window.Window
	untraced bool // the overflow family is not traced here

	mu   sync.Mutex
	peak map[uint32]int64
}

func newMeasurer(src snapshotter, inodes []uint32, baseline map[uint32]snapshot.Counters) *measurer {
	m := &measurer{src: src, inodes: inodes, peak: map[uint32]int64{}}
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

	secs := time.Since(a.Since).Seconds()
	r := doctorReport{Kernel: kernel, Measured: &secs}
	for _, inode := range m.inodes {
		n := snaps[inode]
		if n == nil {
			continue // gone since the start
		}
		me := measurement(a, inode, n, m.untraced)
		me.PeakLive = peak[inode]
		r.Namespaces = append(r.Namespaces, doctorNetns{inode, n.Sysctls, doctor.Diagnose(kernel, n.Sysctls, me)})
	}
	return r
}

// measurement is what the window saw in namespace inode, next to its snapshot n.
func measurement(a *window.Aggregate, inode uint32, n *snapshot.Namespace, untraced bool) *doctor.Measurement {
	o := a.Occupancy(inode, n)
	me := &doctor.Measurement{Window: time.Since(a.Since), CounterDelta: o.CounterDelta,
		Overflows: o.Overflows, OverflowsUntraced: untraced}
	for d, live := range n.TimeWait {
		if live > me.TopLive {
			me.TopDestination, me.TopLive = d, live
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

func writeDoctorText(w io.Writer, r doctorReport) {
	fmt.Fprintf(w, "twtrace doctor: Linux %s", r.Kernel)
	if r.Measured != nil {
		fmt.Fprintf(w, ", measured for %gs", *r.Measured)
	} else {
		fmt.Fprintf(w, ", settings only (add --duration 30s to back findings with measurements)")
	}
	fmt.Fprintln(w)
	for _, n := range r.Namespaces {
		fmt.Fprintf(w, "\nnetns %d\n ", n.NetNS)
		for _, name := range snapshot.TimewaitSysctls {
			v, ok := n.Sysctls[name]
			if !ok {
				v = "absent"
			}
			fmt.Fprintf(w, " %s=%s", name, strings.ReplaceAll(v, " ", "-"))
		}
		fmt.Fprintln(w)
		for _, f := range n.Findings {
			fmt.Fprintf(w, "  [%s] %s: %s\n", f.Severity, f.ID, f.Title)
			fmt.Fprintf(w, "      evidence: %s\n", f.Evidence)
			if f.Advice != "" {
				fmt.Fprintf(w, "      advice:   %s\n", f.Advice)
			}
		}
	}
}
