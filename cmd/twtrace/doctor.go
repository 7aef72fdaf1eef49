package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

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
	Findings []tracer.Finding  `json:"findings"`
}

func doctor(args []string, stdout, stderr io.Writer) error {
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
	var namespaces []tracer.Netns
	if opts.Filter.NetNS != 0 {
		ns, err := tracer.FindNetns(opts.Filter.NetNS)
		if err != nil {
			return err
		}
		namespaces = []tracer.Netns{ns}
	} else if namespaces, err = tracer.Namespaces(); err != nil {
		return err
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	kernel := unix.ByteSliceToString(uts.Release[:])
	if f.duration == 0 && *interval == 0 {
		r, err := diagnose(kernel, namespaces, nil)
		if err != nil {
			return err
		}
		return writeDoctor(stdout, r, f.output == "json")
	}

	m := newMeasurer(namespaces) // the kernel's counters are read before tracing starts
	sess, err := startSession(f, opts, stderr)
	if err != nil {
		return err
	}
	defer sess.Close()
	m.untraced = sess.t.Families()&tracer.FamilyOverflow == 0
	done := make(chan error, 1)
	go func() { done <- sess.t.Run(sess.ctx, m.add, nil) }()
	sample := time.NewTicker(time.Second)
	defer sample.Stop()
	var every <-chan time.Time
	if *interval > 0 {
		t := time.NewTicker(*interval)
		defer t.Stop()
		every = t.C
	}
	report := func() error {
		r, err := diagnose(kernel, namespaces, m.take())
		if err != nil {
			return err
		}
		return writeDoctor(stdout, r, f.output == "json")
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

func diagnose(kernel string, namespaces []tracer.Netns, measured map[uint32]*tracer.Measurement) (doctorReport, error) {
	r := doctorReport{Kernel: kernel}
	for _, ns := range namespaces {
		sysctls, err := tracer.ReadSysctls(ns)
		if err != nil {
			return r, fmt.Errorf("netns %d: %w", ns.Inode, err)
		}
		var m *tracer.Measurement
		if measured != nil {
			m = measured[ns.Inode]
			secs := m.Window.Seconds()
			r.Measured = &secs
		}
		r.Namespaces = append(r.Namespaces, doctorNetns{ns.Inode, sysctls, tracer.Diagnose(kernel, sysctls, m)})
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

// measurer collects what doctor measures over one window: the events, the TIME_WAIT
// peak sampled each second, the kernel's overflow counter at the window's start.
type measurer struct {
	namespaces []tracer.Netns
	mu         sync.Mutex
	agg        *tracer.Aggregate
	baseline   map[uint32]uint64
	peak       map[uint32]int64
	untraced   bool // the overflow family is not traced here
}

func newMeasurer(namespaces []tracer.Netns) *measurer {
	m := &measurer{namespaces: namespaces}
	m.reset()
	m.sample()
	return m
}

func (m *measurer) reset() {
	m.agg = tracer.NewAggregate(time.Now())
	m.baseline = overflowCounters()
	m.peak = map[uint32]int64{}
}

func (m *measurer) add(e *tracer.Event) {
	m.mu.Lock()
	m.agg.Add(e)
	m.mu.Unlock()
}

func (m *measurer) sample() {
	for _, ns := range m.namespaces {
		if c, err := tracer.CountSockets(ns, tracer.Filter{}); err == nil {
			m.mu.Lock()
			m.peak[ns.Inode] = max(m.peak[ns.Inode], int64(c.ByState[tracer.StateTimeWait]))
			m.mu.Unlock()
		}
	}
}

// take returns the window's measurement per namespace and starts a new window.
func (m *measurer) take() map[uint32]*tracer.Measurement {
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[uint32]*tracer.Measurement{}
	for _, ns := range m.namespaces {
		me := &tracer.Measurement{Window: time.Since(m.agg.Since), CounterDelta: -1, PeakLive: m.peak[ns.Inode],
			Overflows: m.agg.OverflowsByNetns[ns.Inode], OverflowsUntraced: m.untraced}
		if now, err := ns.Netstat("TCPTimeWaitOverflow"); err == nil {
			me.CounterDelta = int64(now - m.baseline[ns.Inode])
		}
		if dests, err := tracer.TimewaitByDestination(ns); err == nil {
			for d, live := range dests {
				if live > me.TopLive {
					me.TopDestination, me.TopLive = d, live
				}
			}
		}
		// lifetimes are not split by namespace: every namespace measured shares them
		for k, h := range m.agg.Lifetimes {
			switch {
			case k.Cause == tracer.CauseExpired && k.Substate == tracer.StateTimeWait:
				me.TimeWaitCount, me.TimeWaitP50 = h.Count, h.Percentile(0.5)
			case k.Cause == tracer.CauseExpired && k.Substate == tracer.StateFinWait2:
				me.FinWait2Count, me.FinWait2P50 = h.Count, h.Percentile(0.5)
			case k.Cause == tracer.CauseKilled && k.Detail == tracer.DetailRST:
				me.KilledByRST += h.Count
			}
		}
		out[ns.Inode] = me
	}
	m.reset()
	return out
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
		for _, name := range tracer.TimewaitSysctls {
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
