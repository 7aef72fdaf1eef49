package main

import (
	"io"
	"sync"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

func timewait(args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("timewait", "Usage: twtrace timewait [flags]\n\nMeasure TIME_WAIT sockets for --duration (or until interrupted, or every --interval) and print\nlifetime histograms, live occupancy per namespace and destination with a port-exhaustion\nforecast, overflows against the kernel's counter, and resets by reason and process.", stdout)
	f := newTraceFlags(fs)
	interval := fs.Duration("interval", 0, "print the view every interval until interrupted; 0 prints it once, at the end")
	top := fs.Int("top", 10, "destinations to list")
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
	baseline := overflowCounters()
	sess, err := startSession(f, opts, stderr)
	if err != nil {
		return err
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
	print := func() error {
		mu.Lock()
		defer mu.Unlock()
		v, err := buildView(agg, sess.t, baseline, opts.Filter.NetNS, *top)
		if err != nil {
			return err
		}
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
			err = print()
			summary(stderr, sess.t)
			return err
		}
	}
}

// overflowCounters reads TcpExtTCPTimeWaitOverflow of every namespace, to report deltas.
func overflowCounters() map[uint32]uint64 {
	out := map[uint32]uint64{}
	all, _ := tracer.Namespaces()
	for _, ns := range all {
		if v, err := ns.Netstat("TCPTimeWaitOverflow"); err == nil {
			out[ns.Inode] = v
		}
	}
	return out
}
