package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

func stat(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stat", flag.ContinueOnError)
	output := fs.String("o", "text", "output format: text or json (one object per namespace per line)")
	netns := fs.Uint64("netns", 0, "only this network namespace (inode number); default: every namespace on the machine")
	interval := fs.Duration("interval", 0, "print again every interval until interrupted; 0 prints once")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: twtrace stat [flags]\n\nCount TCP sockets per state and namespace, read from the kernel (sock_diag) in one pass,\nwith TIME_WAIT against tcp_max_tw_buckets and ephemeral ports against ip_local_port_range.\nNeeds no tracing.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *output != "text" && *output != "json" {
		return usagef("-o %q: want text or json", *output)
	}
	if *interval < 0 {
		return usagef("--interval %s: must not be negative", *interval)
	}
	if *netns > 1<<32-1 {
		return usagef("--netns %d: an inode number fits in 32 bits", *netns)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	for {
		if err := statOnce(stdout, uint32(*netns), *output == "json"); err != nil {
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

func statOnce(w io.Writer, only uint32, asJSON bool) error {
	var namespaces []tracer.Netns
	if only != 0 {
		ns, err := tracer.FindNetns(only)
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
		c, err := tracer.CountSockets(ns)
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
