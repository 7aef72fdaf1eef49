package main

import (
	"encoding/json"
	"errors"
	"flag"
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
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	var f traceFlags
	f.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: twtrace doctor [flags]\n\nRead the TIME_WAIT-related sysctls of each namespace and the kernel version and print findings\nwith their evidence; with --duration, trace for that long first and back the findings with\nmeasurements (overflows, peak occupancy, lifetimes, ephemeral port use per destination).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	opts, err := f.options()
	if err != nil {
		return err
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
	report := doctorReport{Kernel: unix.ByteSliceToString(uts.Release[:])}

	var measured map[uint32]*tracer.Measurement
	if f.duration > 0 {
		if measured, err = measure(&f, opts, namespaces, stderr); err != nil {
			return err
		}
		secs := f.duration.Seconds()
		report.Measured = &secs
	}
	for _, ns := range namespaces {
		sysctls, err := tracer.ReadSysctls(ns)
		if err != nil {
			return fmt.Errorf("netns %d: %w", ns.Inode, err)
		}
		var m *tracer.Measurement
		if measured != nil {
			m = measured[ns.Inode]
		}
		report.Namespaces = append(report.Namespaces, doctorNetns{ns.Inode, sysctls, tracer.Diagnose(report.Kernel, sysctls, m)})
	}
	if f.output == "json" {
		b, err := json.Marshal(report)
		if err != nil {
			return err
		}
		_, err = stdout.Write(append(b, '\n'))
		return err
	}
	writeDoctorText(stdout, report)
	return nil
}

// measure traces for --duration and samples each namespace's live TIME_WAIT count
// every second for its peak.
func measure(f *traceFlags, opts tracer.Options, namespaces []tracer.Netns, stderr io.Writer) (map[uint32]*tracer.Measurement, error) {
	baseline := overflowCounters()
	sess, err := startSession(f, opts, stderr)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	var mu sync.Mutex
	agg := tracer.NewAggregate(time.Now())
	done := make(chan error, 1)
	go func() {
		done <- sess.t.Run(sess.ctx, func(e *tracer.Event) {
			mu.Lock()
			agg.Add(e)
			mu.Unlock()
		}, nil)
	}()
	out := map[uint32]*tracer.Measurement{}
	for _, ns := range namespaces {
		out[ns.Inode] = &tracer.Measurement{CounterDelta: -1}
	}
	sample := func() {
		for _, ns := range namespaces {
			if c, err := tracer.CountSockets(ns, tracer.Filter{}); err == nil {
				out[ns.Inode].PeakLive = max(out[ns.Inode].PeakLive, int64(c.ByState[tracer.StateTimeWait]))
			}
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	sample()
	for waiting := true; waiting; {
		select {
		case <-tick.C:
			sample()
		case err := <-done:
			if err != nil {
				return nil, err
			}
			waiting = false
		}
	}
	sample()
	mu.Lock()
	defer mu.Unlock()
	for _, ns := range namespaces {
		m := out[ns.Inode]
		m.Window = time.Since(agg.Since)
		m.Overflows = agg.OverflowsByNetns[ns.Inode]
		if now, err := ns.Netstat("TCPTimeWaitOverflow"); err == nil {
			m.CounterDelta = int64(now - baseline[ns.Inode])
		}
		if dests, err := tracer.TimewaitByDestination(ns); err == nil {
			for d, live := range dests {
				if live > m.TopLive {
					m.TopDestination, m.TopLive = d, live
				}
			}
		}
	}
	for k, h := range agg.Lifetimes {
		// lifetimes are not split by namespace: every namespace measured shares them
		for _, m := range out {
			switch {
			case k.Cause == tracer.CauseExpired && k.Substate == tracer.StateTimeWait:
				m.TimeWaitCount, m.TimeWaitP50 = h.Count, h.Percentile(0.5)
			case k.Cause == tracer.CauseExpired && k.Substate == tracer.StateFinWait2:
				m.FinWait2Count, m.FinWait2P50 = h.Count, h.Percentile(0.5)
			case k.Cause == tracer.CauseKilled && k.Detail == tracer.DetailRST:
				m.KilledByRST += h.Count
			}
		}
	}
	return out, nil
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
