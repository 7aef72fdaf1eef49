package main

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/twtrace/twtrace/internal/netns"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// view is what `twtrace timewait` prints, computed once per print.
type view struct {
	traceStatus
	Since      time.Time
	Elapsed    time.Duration
	Lifetimes  []lifetimeRow
	Namespaces []window.Occupancy
	Dests      []window.Destination
	Overflows  []countRow
	Resets     []resetRow
	ByProcess  []processRow
	// Workloads are the busiest workloads (--top-workloads), MoreWorkloads how many others the
	// window holds; NamespaceWorkloads names the pod that holds a namespace of its own.
	Workloads          []workloadRow
	MoreWorkloads      int
	NamespaceWorkloads map[uint32]workload.Workload
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
	Lost, Missed uint64 // events the kernel could not deliver: the view is incomplete
	Traced       tracer.Families
	NotTraced    map[tracer.Families]string // family -> why: unavailable here, or not selected
	// Offline: the events come from a recording (--input); the kernel's live state is not
	// available. Unreadable counts its lines that could not be read, NoEnd says it has no
	// end record (cut short: its loss is unknown).
	Offline    bool
	Input      string
	Unreadable uint64
	NoEnd      bool
	// Unseen, Unattributed: what reconciliation with the kernel found missing from the
	// events: deaths found gone from sock_diag, counts with no event (by family).
	Unseen       uint64
	Unattributed map[tracer.Families]uint64
}

// complete reports whether every event the window should hold is in it.
func (st *traceStatus) complete() bool {
	return st.Lost == 0 && st.Missed == 0 && st.Unreadable == 0 && !st.NoEnd && st.Unseen == 0 &&
		st.Unattributed[tracer.FamilyOverflow] == 0 && st.Unattributed[tracer.FamilyTW] == 0
}

// incomplete says why the window misses events, "" when it does not.
func (st *traceStatus) incomplete() string {
	if st.complete() {
		return ""
	}
	why := fmt.Sprintf("%d events lost, %d missed", st.Lost, st.Missed)
	if st.Unreadable > 0 {
		why += fmt.Sprintf(", %d unreadable lines in the recording", st.Unreadable)
	}
	if st.NoEnd {
		why += ", the recording has no end record (cut short: loss unknown)"
	}
	if n := st.Unseen; n > 0 {
		why += fmt.Sprintf(", %d timewait deaths no program reported (found gone from sock_diag)", n)
	}
	for _, f := range []tracer.Families{tracer.FamilyOverflow, tracer.FamilyTW} {
		if n := st.Unattributed[f]; n > 0 {
			why += fmt.Sprintf(", %d %s counted by the kernel with no event", n, unattributedNoun(f))
		}
	}
	return why
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

// buildView joins a copy of the window, ending now, with the namespaces' live state read
// now, and names its workloads (names may be nil): the window's lock is not held here.
func buildView(a *window.Aggregate, st traceStatus, src snapshotter, names namer, only uint32, top, topWorkloads int, now time.Time) view {
	st.Unseen, st.Unattributed = a.Reconciled()
	v := view{traceStatus: st, Since: a.Since, Elapsed: now.Sub(a.Since)}
	for k, h := range a.Lifetimes {
		v.Lifetimes = append(v.Lifetimes, lifetimeRow{k, h})
	}
	sort.Slice(v.Lifetimes, func(i, j int) bool { return lessLifetime(v.Lifetimes[i].Key, v.Lifetimes[j].Key) })
	inodes := namespacesOf(a, only, st.Offline)
	snaps := map[uint32]*snapshot.Namespace{}
	for _, inode := range inodes {
		n, err := src.Take(inode)
		if err != nil {
			n = nil // gone since, or not ours to read: its live figures are unknown
		}
		v.Namespaces = append(v.Namespaces, a.Occupancy(inode, n))
		if n != nil {
			snaps[inode] = n
			v.Dests = append(v.Dests, a.Destinations(n, now)...)
		}
	}
	v.NamespaceWorkloads = namespaceWorkloads(names, inodes)
	v.Workloads = workloadRows(a, names, snaps, now)
	if len(v.Workloads) > topWorkloads {
		v.MoreWorkloads = len(v.Workloads) - topWorkloads
		v.Workloads = v.Workloads[:topWorkloads]
	}
	// busiest first; ties in a fixed order, so that a replay prints what the live run did
	slices.SortStableFunc(v.Dests, func(x, y window.Destination) int {
		return cmp.Or(window.CompareBusiest(&x, &y), compareDestinations(x.Destination, y.Destination))
	})
	v.Dests = v.Dests[:min(top, len(v.Dests))]
	for d, n := range a.Overflows {
		v.Overflows = append(v.Overflows, countRow{d, n})
	}
	slices.SortFunc(v.Overflows, func(x, y countRow) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), compareDestinations(x.Dest, y.Dest))
	})
	for k, n := range a.Resets {
		v.Resets = append(v.Resets, resetRow{k, n})
	}
	slices.SortFunc(v.Resets, func(x, y resetRow) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmpBool(x.Key.Recv, y.Key.Recv), cmp.Compare(x.Key.Reason, y.Key.Reason))
	})
	for k, n := range a.ResetsByProcess {
		v.ByProcess = append(v.ByProcess, processRow{k, n})
	}
	slices.SortFunc(v.ByProcess, func(x, y processRow) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Key.PID, y.Key.PID), bytes.Compare(x.Key.Comm[:], y.Key.Comm[:]))
	})
	return v
}

func compareDestinations(x, y snapshot.Destination) int {
	return cmp.Or(cmp.Compare(x.NetNS, y.NetNS), x.SAddr.Compare(y.SAddr), x.DAddr.Compare(y.DAddr), cmp.Compare(x.DPort, y.DPort))
}

func cmpBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case x:
		return 1
	}
	return -1
}

// families lists the event families one at a time, in --events order.
var families = []tracer.Families{tracer.FamilyState, tracer.FamilyTW, tracer.FamilyOverflow, tracer.FamilyReset, tracer.FamilyConnect}

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
// event came from, or (live) the caller's own when there were none.
func namespacesOf(a *window.Aggregate, only uint32, offline bool) []uint32 {
	if only != 0 {
		return []uint32{only}
	}
	var out []uint32
	for ns := range a.Netns {
		out = append(out, ns)
	}
	if len(out) == 0 && !offline {
		if self, err := netns.Self(); err == nil {
			out = append(out, self.Inode)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func addrPort(a netip.Addr, p uint16) string { return netip.AddrPortFrom(a, p).String() }
