package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

func stat(args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("stat", "Usage: twtrace stat [flags]\n\nCount TCP sockets per state and namespace, read from the kernel (sock_diag) in one pass,\nwith TIME_WAIT against tcp_max_tw_buckets and ephemeral ports against ip_local_port_range.\nNeeds no tracing: the socket filters apply to the dump.", stdout)
	f := newTraceFlags(fs)
	interval := fs.Duration("interval", 0, "print again every interval until interrupted (or --duration); 0 prints once")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := f.options()
	if err != nil {
		return err
	}
	if *interval < 0 {
		return usagef("--interval %s: must not be negative", *interval)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	for {
		if err := statOnce(stdout, opts.Filter, f.output == "json"); err != nil {
			return err
		}
		if *interval == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
}

func statOnce(w io.Writer, filter tracer.Filter, asJSON bool) error {
	var namespaces []tracer.Netns
	if filter.NetNS != 0 {
		ns, err := tracer.FindNetns(filter.NetNS)
		if err != nil {
			return err
		}
		namespaces = []tracer.Netns{ns}
	} else {
		var err error
		if namespaces, err = tracer.Namespaces(); err != nil {
			return err
		}
	}
	for _, ns := range namespaces {
		c, err := tracer.CountSockets(ns, filter)
		if err != nil {
			return fmt.Errorf("netns %d: %w", ns.Inode, err)
		}
		if asJSON {
			writeStatJSON(w, c)
		} else {
			writeStatText(w, c)
		}
	}
	return nil
}

func writeStatText(w io.Writer, c tracer.SocketCounts) {
	fmt.Fprintf(w, "netns %d: %d TCP sockets\n", c.NetNS, c.Total)
	for s := tracer.StateEstablished; s <= tracer.StateNewSynRecv; s++ {
		if n := c.ByState[s]; n > 0 {
			fmt.Fprintf(w, "  %-12s %8d\n", s, n)
		}
	}
	fmt.Fprintf(w, "  TIME_WAIT against tcp_max_tw_buckets: %s\n", share(c.ByState[tracer.StateTimeWait], c.MaxTWBuckets))
	if c.PortHigh >= c.PortLow && c.PortHigh != 0 {
		size := int64(c.PortHigh) - int64(c.PortLow) + 1
		fmt.Fprintf(w, "  ephemeral ports in use: %s (range %d-%d)\n", share(uint64(c.EphemeralPorts), size), c.PortLow, c.PortHigh)
	} else {
		fmt.Fprintf(w, "  ephemeral ports in use: unknown (ip_local_port_range unreadable)\n")
	}
}

func share(n uint64, of int64) string {
	if of <= 0 {
		return fmt.Sprintf("%d of unknown", n)
	}
	return fmt.Sprintf("%d of %d (%.1f%%)", n, of, 100*float64(n)/float64(of))
}

func writeStatJSON(w io.Writer, c tracer.SocketCounts) {
	states := map[string]uint64{}
	for s := tracer.StateEstablished; s <= tracer.StateNewSynRecv; s++ {
		states[s.String()] = c.ByState[s]
	}
	var maxTW, portRange any
	if c.MaxTWBuckets >= 0 {
		maxTW = c.MaxTWBuckets
	}
	if c.PortHigh != 0 {
		portRange = [2]uint16{c.PortLow, c.PortHigh}
	}
	b, _ := json.Marshal(map[string]any{
		"ts": time.Now().UTC().Format(time.RFC3339Nano), "netns": c.NetNS, "total": c.Total, "states": states,
		"time_wait": c.ByState[tracer.StateTimeWait], "max_tw_buckets": maxTW,
		"ephemeral_ports_in_use": c.EphemeralPorts, "ephemeral_port_range": portRange,
	})
	fmt.Fprintf(w, "%s\n", b)
}
