package main

import (
	"net/netip"
	"sort"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

// view is what `twtrace timewait` prints, computed once per print.
type view struct {
	Since      time.Time
	Elapsed    time.Duration
	Lost       uint64 // events the kernel could not deliver: the view is incomplete
	Missed     uint64
	Traced     tracer.Families
	NotTraced  map[tracer.Families]string // family -> why: unavailable here, or not selected
	Lifetimes  []lifetimeRow
	Namespaces []netnsRow
	Dests      []destRow
	Overflows  []countRow
	Resets     []resetRow
	ByProcess  []processRow
}

type lifetimeRow struct {
	Key tracer.LifetimeKey
	H   *tracer.Histogram
}

type netnsRow struct {
	NetNS         uint32
	Live          int64 // -1 when the namespace is gone
	MaxTWBuckets  int64
	Created       uint64
	Overflows     uint64
	CounterDelta  int64 // TcpExtTCPTimeWaitOverflow since start; -1 unknown
	PortRangeSize int
}

type destRow struct {
	Dest     tracer.Destination
	Live     int
	Share    float64 // of the ephemeral port range
	Rate     float64 // new timewait sockets per second
	Forecast tracer.Forecast
}

type countRow struct {
	Dest  tracer.Destination
	Count uint64
}

type resetRow struct {
	Key   tracer.ResetKey
	Count uint64
}

type processRow struct {
	Key   tracer.ProcessKey
	Count uint64
}

func buildView(a *tracer.Aggregate, t *tracer.Tracer, baseline map[uint32]uint64, only uint32, top int) (view, error) {
	v := view{Since: a.Since, Elapsed: time.Since(a.Since)}
	if s, err := t.Stats(); err == nil {
		v.Lost, v.Missed = s.Lost, s.Missed
	}
	v.Traced, v.NotTraced = notTraced(t.Families(), t.Unavailable())
	for k, h := range a.Lifetimes {
		v.Lifetimes = append(v.Lifetimes, lifetimeRow{k, h})
	}
	sort.Slice(v.Lifetimes, func(i, j int) bool { return lessLifetime(v.Lifetimes[i].Key, v.Lifetimes[j].Key) })

	lifetime, ok := a.MeanLifetime(tracer.StateTimeWait)
	if !ok {
		lifetime = 60 * time.Second // what current kernels arm; used until measured
	}
	for _, inode := range namespacesOf(a, only) {
		row, dests := namespaceView(a, inode, baseline, lifetime)
		v.Namespaces = append(v.Namespaces, row)
		v.Dests = append(v.Dests, dests...)
	}
	sort.Slice(v.Dests, func(i, j int) bool { return v.Dests[i].Live > v.Dests[j].Live })
	v.Dests = v.Dests[:min(top, len(v.Dests))]
	for d, n := range a.Overflows {
		v.Overflows = append(v.Overflows, countRow{d, n})
	}
	sort.Slice(v.Overflows, func(i, j int) bool { return v.Overflows[i].Count > v.Overflows[j].Count })
	for k, n := range a.Resets {
		v.Resets = append(v.Resets, resetRow{k, n})
	}
	sort.Slice(v.Resets, func(i, j int) bool { return v.Resets[i].Count > v.Resets[j].Count })
	for k, n := range a.ResetsByProcess {
		v.ByProcess = append(v.ByProcess, processRow{k, n})
	}
	sort.Slice(v.ByProcess, func(i, j int) bool { return v.ByProcess[i].Count > v.ByProcess[j].Count })
	return v, nil
}

// families lists the event families one at a time, in --events order.
var families = []tracer.Families{tracer.FamilyState, tracer.FamilyTW, tracer.FamilyOverflow, tracer.FamilyReset}

// notTraced says why each family the tracer does not deliver is missing.
func notTraced(traced tracer.Families, missing []tracer.MissingFamily) (tracer.Families, map[tracer.Families]string) {
	why := map[tracer.Families]string{}
	requested := traced
	for _, m := range missing {
		why[m.Family] = "unavailable on this kernel: " + m.Reason
		requested |= m.Family
	}
	for _, f := range families {
		if requested&f == 0 {
			why[f] = "not selected (--events)"
		}
	}
	return traced, why
}

// has reports whether the view's events include family f.
func (v *view) has(f tracer.Families) bool { return v.Traced&f != 0 }

func lessLifetime(a, b tracer.LifetimeKey) bool {
	if a.Substate != b.Substate {
		return a.Substate > b.Substate // TIME_WAIT before FIN_WAIT2
	}
	if a.Cause != b.Cause {
		return a.Cause < b.Cause
	}
	return a.Detail < b.Detail
}

// namespacesOf lists the namespaces to report: the one filtered on, or every one an
// event came from, or the caller's own when there were none.
func namespacesOf(a *tracer.Aggregate, only uint32) []uint32 {
	if only != 0 {
		return []uint32{only}
	}
	var out []uint32
	for ns := range a.Netns {
		out = append(out, ns)
	}
	if len(out) == 0 {
		if self, err := tracer.SelfNetns(); err == nil {
			out = append(out, self.Inode)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// namespaceView reads the namespace's live sockets (sock_diag, now) next to what was traced.
func namespaceView(a *tracer.Aggregate, inode uint32, baseline map[uint32]uint64, lifetime time.Duration) (netnsRow, []destRow) {
	row := netnsRow{NetNS: inode, Live: -1, MaxTWBuckets: -1, CounterDelta: -1,
		Created: a.CreatedByNetns[inode], Overflows: a.OverflowsByNetns[inode]}
	ns, err := tracer.FindNetns(inode)
	if err != nil {
		return row, nil // gone since: its sockets went with it
	}
	counts, err := tracer.CountSockets(ns, tracer.Filter{})
	if err != nil {
		return row, nil
	}
	row.Live = int64(counts.ByState[tracer.StateTimeWait])
	row.MaxTWBuckets = counts.MaxTWBuckets
	if counts.PortHigh >= counts.PortLow && counts.PortHigh != 0 {
		row.PortRangeSize = int(counts.PortHigh) - int(counts.PortLow) + 1
	}
	if now, err := ns.Netstat("TCPTimeWaitOverflow"); err == nil {
		row.CounterDelta = int64(now - baseline[inode]) // a namespace born since started at 0
	}
	byDest, err := tracer.TimewaitByDestination(ns)
	if err != nil {
		return row, nil
	}
	elapsed := time.Since(a.Since).Seconds()
	var dests []destRow
	for d, live := range byDest {
		r := destRow{Dest: d, Live: live, Rate: float64(a.Created[d]) / elapsed}
		if row.PortRangeSize > 0 {
			r.Share = float64(live) / float64(row.PortRangeSize)
		}
		r.Forecast = tracer.ForecastPorts(live, r.Rate, lifetime, row.PortRangeSize)
		dests = append(dests, r)
	}
	return row, dests
}

func addrPort(a netip.Addr, p uint16) string { return netip.AddrPortFrom(a, p).String() }
