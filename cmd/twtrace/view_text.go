package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
	"golang.org/x/sys/unix"
)

func writeViewText(w io.Writer, v view) {
	fmt.Fprintf(w, "TIME_WAIT since %s (%s)", v.Since.Format("15:04:05"), v.Elapsed.Round(time.Millisecond))
	if v.Offline {
		fmt.Fprintf(w, ", replayed from %s", v.Input)
	}
	if why := v.incomplete(); why != "" {
		fmt.Fprintf(w, " -- INCOMPLETE: %s", why)
	}
	fmt.Fprintln(w)
	for _, f := range families {
		if why, ok := v.NotTraced[f]; ok && (strings.HasPrefix(why, "unavailable") || strings.HasPrefix(why, "unknown")) {
			fmt.Fprintf(w, "NOT TRACED: %s events, %s\n", f, why)
		}
	}

	fmt.Fprintf(w, "\nLifetimes of timewait sockets that died in the window (born before it: lifetime unknown, not shown)\n")
	switch {
	case !v.has(tracer.FamilyTW):
		fmt.Fprintf(w, "  unknown: tw events %s\n", v.NotTraced[tracer.FamilyTW])
	case len(v.Lifetimes) == 0:
		fmt.Fprintf(w, "  none yet\n")
	}
	for _, l := range v.Lifetimes {
		h := l.H
		approx := ""
		if !h.Exact() {
			approx = " (percentiles from a sample)"
		}
		fmt.Fprintf(w, "\n  %s %s: count %d, min %s, p50 %s, p99 %s, max %s%s\n", l.Key.Substate, causeName(l.Key),
			h.Count, ms(h.Min), ms(h.Percentile(0.5)), ms(h.Percentile(0.99)), ms(h.Max), approx)
		drawHistogram(w, h)
	}

	if v.Offline {
		fmt.Fprintf(w, "\nLive TIME_WAIT per namespace: not available offline (the kernel's tables and counters are not in a recording)\n")
	} else {
		fmt.Fprintf(w, "\nLive TIME_WAIT per namespace (sock_diag, now)\n")
	}
	fmt.Fprintf(w, "  %-11s %8s %16s %7s %8s %10s %10s  %s\n", "NETNS", "LIVE", "MAX_TW_BUCKETS", "USE", "CREATED", "OVERFLOWS", "KERNEL_CTR", "HELD BY")
	for _, n := range v.Namespaces {
		live, maxTW, use, ctr := orUnknown(n.Live), orUnknown(n.MaxTWBuckets), percent(n.Live, n.MaxTWBuckets), orUnknown(n.CounterDelta)
		if v.Offline {
			live, maxTW, use, ctr = "offline", "offline", "offline", "offline"
		}
		fmt.Fprintf(w, "  %-11d %8s %16s %7s %8s %10s %10s  %s\n", n.NetNS, live, maxTW, use,
			v.count(tracer.FamilyTW, n.Created), v.count(tracer.FamilyOverflow, n.Overflows), ctr, v.heldBy(n.NetNS))
		if n.UnattributedOverflows > 0 || n.UnattributedBirths > 0 || n.Unseen > 0 {
			fmt.Fprintf(w, "  %-11s reconciled with the kernel: +%d overflows and +%d births it counted with no event, %d deaths found gone unreported\n",
				"", n.UnattributedOverflows, n.UnattributedBirths, n.Unseen)
		}
	}

	writeWorkloadsText(w, v)

	if v.Offline {
		fmt.Fprintf(w, "\nTop destinations by live TIME_WAIT: not available offline (they are the kernel's sockets now)\n")
	} else {
		writeDestinationsText(w, v)
	}
	writeTracedText(w, v)
}

func writeDestinationsText(w io.Writer, v view) {
	fmt.Fprintf(w, "\nTop destinations by live TIME_WAIT (each needs its own local port from ip_local_port_range)\n")
	if !v.has(tracer.FamilyConnect) {
		fmt.Fprintf(w, "  connect() failures: unknown: connect events %s\n", v.NotTraced[tracer.FamilyConnect])
	}
	fmt.Fprintf(w, "  %-11s %-24s %-40s %-46s %6s %7s %9s  %s\n", "NETNS", "HELD BY", "LOCAL", "REMOTE", "LIVE", "RANGE", "NEW/S", "FORECAST")
	for _, d := range v.Dests {
		rate, forecast := fmt.Sprintf("%.1f", d.Rate), forecastText(d.Forecast)
		if !v.has(tracer.FamilyTW) {
			rate, forecast = "unknown", "unknown: tw events not traced"
		}
		fmt.Fprintf(w, "  %-11d %-24s %-40s %-46s %6d %6.1f%% %9s  %s\n", d.NetNS, v.heldBy(d.NetNS), d.SAddr, addrPort(d.DAddr, d.DPort),
			d.Live, 100*d.Share, rate, forecast)
		if line := connectLine(v, d); line != "" {
			fmt.Fprintf(w, "  %-11s %s\n", "", line)
		}
	}
}

// connectLine tells what connect() met towards a destination in the window: the timewait
// sockets it took over, the calls that failed for want of a port, and the other failures
// by errno; "" when nothing happened there or nothing was traced.
func connectLine(v view, d window.Destination) string {
	if !v.has(tracer.FamilyConnect) || (len(d.Failures) == 0 && d.Reused == 0) {
		return ""
	}
	reused := v.count(tracer.FamilyTW, d.Reused)
	line := fmt.Sprintf("connect(): reused %s, failed %d", reused, d.PortFailures())
	var others []string
	for _, name := range slices.Sorted(maps.Keys(d.Failures)) {
		if name != "EADDRNOTAVAIL" {
			others = append(others, fmt.Sprintf("%s %d", name, d.Failures[name]))
		}
	}
	if d.PortFailures() > 0 {
		line += " (EADDRNOTAVAIL: no free local port)"
	}
	if len(others) > 0 {
		line += "; other failures: " + strings.Join(others, ", ")
	}
	return line
}

func writeTracedText(w io.Writer, v view) {
	if !v.has(tracer.FamilyOverflow) {
		fmt.Fprintf(w, "\nOverflows by destination: unknown: overflow events %s\n", v.NotTraced[tracer.FamilyOverflow])
	} else if len(v.Overflows) > 0 {
		fmt.Fprintf(w, "\nOverflows by destination (closed without TIME_WAIT: tcp_max_tw_buckets reached)\n")
		for _, o := range v.Overflows {
			fmt.Fprintf(w, "  %-11d %-40s %-46s %d\n", o.Dest.NetNS, o.Dest.SAddr, addrPort(o.Dest.DAddr, o.Dest.DPort), o.Count)
		}
	}
	if !v.has(tracer.FamilyReset) {
		fmt.Fprintf(w, "\nResets: unknown: reset events %s\n", v.NotTraced[tracer.FamilyReset])
	} else if len(v.Resets) > 0 {
		fmt.Fprintf(w, "\nResets by reason\n")
		for _, r := range v.Resets {
			dir, reason := "sent", r.Key.Reason
			if r.Key.Recv {
				dir, reason = "recv", "-"
			}
			fmt.Fprintf(w, "  %-4s %-28s %d\n", dir, reason, r.Count)
		}
		fmt.Fprintf(w, "\nResets by process (sent and received)\n")
		for _, p := range v.ByProcess {
			comm := commString(p.Key.Comm)
			if p.Key.PID == 0 {
				comm = "? (owner unknown)"
			}
			fmt.Fprintf(w, "  %-7d %-16s %d\n", p.Key.PID, comm, p.Count)
		}
	}
}

// heldBy names the pod that holds namespace inode, "-" when none does (the host's, one
// shared by several, or offline).
func (v *view) heldBy(inode uint32) string {
	w, ok := v.NamespaceWorkloads[inode]
	if !ok {
		return "-"
	}
	return workloadColumn(&w)
}

func writeWorkloadsText(w io.Writer, v view) {
	fmt.Fprintf(w, "\nPer workload (the cgroup that created each socket; TW_NOW: its timewait sockets born while tracing, alive now)\n")
	fmt.Fprintf(w, "  %-24s %-11s %8s %8s %8s %10s %9s %9s %10s  %s\n", "WORKLOAD", "NETNS", "TW_NOW", "CREATED", "NEW/S", "OVERFLOWS", "RST_SENT", "RST_RECV", "CONN_FAIL", "TIMEWAIT TABLE FORECAST")
	if len(v.Workloads) == 0 {
		fmt.Fprintf(w, "  no timewait, overflow, reset or connect event yet\n")
	}
	for _, r := range v.Workloads {
		name := "unknown"
		if r.Known {
			name = workloadColumn(&r.W)
		}
		now, rate, forecast := v.count(tracer.FamilyTW, r.TimeWaitNow), fmt.Sprintf("%.1f", r.Rate), tableForecastText(r)
		if !v.has(tracer.FamilyTW) {
			rate, forecast = "unknown", "unknown: tw events not traced"
		}
		fmt.Fprintf(w, "  %-24s %-11d %8s %8s %8s %10s %9s %9s %10s  %s\n", name, r.NetNS, now, v.count(tracer.FamilyTW, r.Created), rate,
			v.count(tracer.FamilyOverflow, r.Overflows), v.count(tracer.FamilyReset, r.ResetsSent), v.count(tracer.FamilyReset, r.ResetsRecv),
			v.count(tracer.FamilyConnect, r.connectFailures()), forecast)
		if v.has(tracer.FamilyConnect) && len(r.ConnectFails) > 0 {
			fmt.Fprintf(w, "  %-24s connect() failures: %s\n", "", errnoCounts(r.ConnectFails))
		}
	}
	if v.MoreWorkloads > 0 {
		fmt.Fprintf(w, "  and %d more (--top-workloads)\n", v.MoreWorkloads)
	}
}

// tableForecastText says whether the workload alone would fill its namespace's timewait table.
func tableForecastText(r workloadRow) string {
	f := r.Forecast
	switch {
	case !r.ForecastKnown:
		return "unknown: the namespace's table was not read"
	case !f.Full:
		return fmt.Sprintf("not at risk (settles near %.0f sockets)", f.SteadyState)
	case f.FullIn == 0:
		return "table full now"
	}
	return fmt.Sprintf("fills the table in ~%s", f.FullIn.Round(time.Second))
}

func causeName(k window.LifetimeKey) string {
	if d := k.Detail.String(); d != "" {
		return k.Cause.String() + " (" + d + ")"
	}
	return k.Cause.String()
}

// drawHistogram prints log2 millisecond buckets the way bcc's tools do.
func drawHistogram(w io.Writer, h *window.Histogram) {
	first, last := -1, -1
	var peak uint64
	for i, n := range h.Buckets {
		if n > 0 {
			if first < 0 {
				first = i
			}
			last = i
			peak = max(peak, n)
		}
	}
	if first < 0 {
		return
	}
	fmt.Fprintf(w, "  %24s : %-8s %s\n", "msecs", "count", "distribution")
	for i := first; i <= last; i++ {
		lo, hi := uint64(0), uint64(1)
		if i > 0 {
			lo, hi = 1<<(i-1), 1<<i
		}
		bar := int(40 * h.Buckets[i] / peak)
		fmt.Fprintf(w, "  %10d -> %-10d : %-8d |%-40s|\n", lo, hi-1, h.Buckets[i], strings.Repeat("*", bar))
	}
}

func forecastText(f window.Forecast) string {
	reuse := ""
	if f.Reuse {
		reuse = ", connect() reuses them"
	}
	switch {
	case !f.AtRisk:
		return fmt.Sprintf("not at risk (settles near %.0f sockets, %.0f of %d ports blocked%s)", f.SteadyState, f.Blocking, f.Usable, reuse)
	case f.Exhaustion == 0:
		return "ports exhausted now: connect() fails"
	}
	return fmt.Sprintf("ports run out in ~%s", f.Exhaustion.Round(time.Second))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// count is n, or "unknown" when the family that counts it is not traced: never a false 0.
func (v *view) count(f tracer.Families, n uint64) string {
	if !v.has(f) {
		return "unknown"
	}
	return fmt.Sprint(n)
}

func orUnknown(n int64) string {
	if n < 0 {
		return "unknown"
	}
	return fmt.Sprint(n)
}

func percent(n, of int64) string {
	if n < 0 || of <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

func commString(c [16]byte) string { return unix.ByteSliceToString(c[:]) }

// errnoCounts lists failures by errno name, in name order: "EADDRNOTAVAIL 5, ECONNREFUSED 1".
func errnoCounts(m map[string]uint64) string {
	parts := make([]string, 0, len(m))
	for _, name := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", name, m[name]))
	}
	return strings.Join(parts, ", ")
}
