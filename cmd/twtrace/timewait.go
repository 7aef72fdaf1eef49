package main

import (
	"io"
	"time"

	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
)

func timewait(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := commandFlags("timewait", "Usage: twtrace timewait [flags]\n\nMeasure TIME_WAIT sockets for --duration (or until interrupted, or every --interval) and print\nlifetime histograms, live occupancy per namespace and destination with a port-exhaustion\nforecast, overflows against the kernel's counter, and resets by reason and process.", stdout)
	f := newTraceFlags(fs)
	interval := fs.Duration("interval", 0, "print the view every interval until interrupted; 0 prints it once, at the end")
	top := fs.Int("top", 10, "destinations to list")
	input := fs.String("input", "", "replay a recording of `watch -o json` (a file, or - for standard input) instead of tracing; needs no privileges")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := f.options()
	if err != nil {
		return err
	}
	opts.CountTransitions = true // the view reports counts: no state event needs to cross the ring buffer
	if *interval < 0 {
		return usagef("--interval %s: must not be negative", *interval)
	}
	if *top < 1 {
		return usagef("--top %d: list at least one destination", *top)
	}
	if *input != "" {
		if err := tracingOnly(fs, "backend", "ringbuf-size", "events", "duration", "interval", "cri-socket", "bpf-stats"); err != nil {
			return err
		}
		filter := replayFilter{Filter: opts.Filter, Workload: f.workload.recorded()}
		return timewaitReplay(*input, filter, *top, f.workload.top, f.output == "json", stdin, stdout, stderr)
	}
	sess, err := startReconciledSession(f, &opts, stderr)
	if err != nil {
		return err
	}
	defer sess.Close()
	names, src, baseline := sess.names, sess.src, sess.baseline

	win := window.New(time.Now(), baseline)
	rec := newReconciliation(sess.t.Families(), opts.Filter, src, baseline, foldFindings(win))
	reconciled := make(chan struct{})
	go func() {
		defer close(reconciled)
		rec.loop(sess.ctx)
	}()
	done := make(chan error, 1)
	go func() {
		done <- sess.t.Run(sess.ctx, func(e *tracer.Event) {
			rec.observe(e)
			win.Add(e)
		}, rec.idle)
	}()
	print := func() error {
		v := timewaitView(win, sess.t, src, names, opts.Filter.NetNS, *top, f.workload.top)
		if f.output == "json" {
			return writeViewJSON(stdout, v)
		}
		writeViewText(stdout, v)
		return nil
	}
	var tick <-chan time.Time
	if *interval > 0 {
		t := time.NewTicker(*interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			if err := print(); err != nil {
				return err
			}
		case err := <-done:
			if err != nil {
				return err
			}
			<-reconciled
			rec.finish()
			err = print()
			summary(stderr, sess.t)
			reconciledSummary(stderr, rec)
			sess.costSummary(stderr)
			return err
		}
	}
}

// timewaitView is one print of the live view: a copy of the window, then the kernel's
// state read outside its lock.
func timewaitView(win *window.Window, t *tracer.Tracer, src snapshotter, names namer, only uint32, top, topWorkloads int) view {
	return buildView(win.Copy(), liveStatus(t), src, names, only, top, topWorkloads, time.Now())
}

// timewaitReplay prints the view of a recording: the traced sections as the live run
// printed them, the live ones marked not available offline.
func timewaitReplay(name string, filter replayFilter, top, topWorkloads int, asJSON bool, stdin io.Reader, stdout, stderr io.Writer) error {
	a, rec, err := replayWindow(name, stdin, filter)
	if err != nil {
		return err
	}
	v := buildView(a, recordingStatus(rec), offlineSource{}, rec.Names, recordingNamespace(filter.Filter, rec), top, topWorkloads, rec.Until)
	reportReplay(stderr, rec)
	if asJSON {
		return writeViewJSON(stdout, v)
	}
	writeViewText(stdout, v)
	return nil
}
