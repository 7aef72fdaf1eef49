package main

import (
	"net/netip"
	"sort"
	"time"

	"github.com/twtrace/twtrace/internal/netns"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
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
	Namespaces []window.Occupancy
	Dests      []window.Destination
	Overflows  []countRow
	Resets     []resetRow
	ByProcess  []processRow
}

type lifetimeRow struct {
	Key window.LifetimeKey
	H   *window.Histogram
}

type countRow struct {
	Dest  snapshot.Destination
	Count uint64
}

type resetRow struct {
	Key   window.ResetKey
	Count uint64
}

type processRow struct {
	Key   window.ProcessKey
	Count uint64
}

// snapshotter reads a namespace's live state from the kernel (snapshot.Source).
type snapshotter interface {
	Take(inode uint32) (*snapshot.Namespace, error)
}

// traceStatus is what the event source says about itself: loss and the families it delivers.
type traceStatus struct {
	Lost, Missed uint64
	Traced       tracer.Families
	NotTraced    map[tracer.Families]string
}

// liveStatus reads a running tracer's status.
func liveStatus(t *tracer.Tracer) traceStatus {
	var st traceStatus
	if s, err := t.Stats(); err == nil {
		st.Lost, st.Missed = s.Lost, s.Missed
	}
	st.Traced, st.NotTraced = notTraced(t.Families(), t.Unavailable())
	return st
}

// buildView joins a copy of the window with the namespaces' live state, read now: the
// window's lock is not held here.
func buildView(a *window.Aggregate, st traceStatus, src snapshotter, only uint32, top int) view {
	now := time.Now()
	v := view{Since: a.Since, Elapsed: now.Sub(a.Since), Lost: st.Lost, Missed: st.Missed, Traced: st.Traced, NotTraced: st.NotTraced}
	for k, h := range a.Lifetimes {
		v.Lifetimes = append(v.Lifetimes, lifetimeRow{k, h})
	}
	sort.Slice(v.Lifetimes, func(i, j int) bool { return lessLifetime(v.Lifetimes[i].Key, v.Lifetimes[j].Key) })
	for _, inode := range namespacesOf(a, only) {
		n, err := src.Take(inode)
		if err != nil {
			n = nil // gone since, or not ours to read: its live figures are unknown
		}
		v.Namespaces = append(v.Namespaces, a.Occupancy(inode, n))
		if n != nil {
			v.Dests = append(v.Dests, a.Destinations(n, now)...)
		}
	}
	sort.SliceStable(v.Dests, func(i, j int) bool { return v.Dests[i].Live > v.Dests[j].Live })
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
	return v
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

func lessLifetime(a, b window.LifetimeKey) bool {
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
func namespacesOf(a *window.Aggregate, only uint32) []uint32 {
	if only != 0 {
		return []uint32{only}
	}
	var out []uint32
	for ns := range a.Netns {
		out = append(out, ns)
	}
	if len(out) == 0 {
		if self, err := netns.Self(); err == nil {
			out = append(out, self.Inode)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func addrPort(a netip.Addr, p uint16) string { return netip.AddrPortFrom(a, p).String() }
