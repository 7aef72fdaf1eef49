package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
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
	names, err := f.workload.openNamespaces()
	if err != nil {
		return err
	}
	defer names.Close()
	src := snapshot.NewSource(snapshot.Options{Keep: window.Keep(opts.Filter)})
	for {
		if err := statOnce(stdout, src, names, opts.Filter.NetNS, f.output == "json"); err != nil {
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

func statOnce(w io.Writer, src *snapshot.Source, names namer, only uint32, asJSON bool) error {
	var inodes []uint32
	if only != 0 {
		if _, err := src.Index().Find(only); err != nil {
			return err
		}
		inodes = []uint32{only}
	} else {
		all, err := src.Namespaces()
		if err != nil {
			return err
		}
		for _, ns := range all {
			inodes = append(inodes, ns.Inode)
		}
	}
	heldBy := namespaceWorkloads(names, inodes)
	for _, inode := range inodes {
		n, err := src.Take(inode)
		if err != nil {
			return fmt.Errorf("netns %d: %w", inode, err)
		}
		if asJSON {
			writeStatJSON(w, n, namespaceNames(heldBy, inode))
		} else {
			writeStatText(w, n, namespaceNames(heldBy, inode))
		}
	}
	return nil
}

// writeStatText prints a namespace's counts, and the pod that holds it (nil: none does).
func writeStatText(w io.Writer, n *snapshot.Namespace, pod *workloadNames) {
	fmt.Fprintf(w, "netns %d", n.NetNS)
	if pod != nil {
		fmt.Fprintf(w, " (held by %s)", pod.Name)
	}
	fmt.Fprintf(w, ": %d TCP sockets\n", n.Total)
	for s := tracer.StateEstablished; s <= tracer.StateNewSynRecv; s++ {
		if c := n.ByState[s]; c > 0 {
			fmt.Fprintf(w, "  %-12s %8d\n", s, c)
		}
	}
	fmt.Fprintf(w, "  TIME_WAIT against tcp_max_tw_buckets: %s\n", share(n.ByState[tracer.StateTimeWait], n.Limits.MaxTWBuckets))
	if size := n.Limits.PortRangeSize(); size > 0 {
		fmt.Fprintf(w, "  ephemeral ports in use: %s (range %d-%d)\n", share(uint64(n.EphemeralPorts), int64(size)), n.Limits.PortLow, n.Limits.PortHigh)
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

func writeStatJSON(w io.Writer, n *snapshot.Namespace, pod *workloadNames) {
	states := map[string]uint64{}
	for s := tracer.StateEstablished; s <= tracer.StateNewSynRecv; s++ {
		states[s.String()] = n.ByState[s]
	}
	var maxTW, portRange any
	if n.Limits.MaxTWBuckets >= 0 {
		maxTW = n.Limits.MaxTWBuckets
	}
	if n.Limits.PortHigh != 0 {
		portRange = [2]uint16{n.Limits.PortLow, n.Limits.PortHigh}
	}
	b, _ := json.Marshal(map[string]any{
		"ts": n.Time.UTC().Format(time.RFC3339Nano), "netns": n.NetNS, "total": n.Total, "states": states,
		"time_wait": n.ByState[tracer.StateTimeWait], "max_tw_buckets": maxTW,
		"ephemeral_ports_in_use": n.EphemeralPorts, "ephemeral_port_range": portRange, "workload": pod,
	})
	fmt.Fprintf(w, "%s\n", b)
}
