package window

import (
	"cmp"
	"slices"
	"time"

	"github.com/twtrace/twtrace/internal/forecast"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/tracer"
)

// assumedLifetime is what current kernels arm a TIME_WAIT socket for, used by the forecast
// until a lifetime is measured.
const assumedLifetime = 60 * time.Second

// Occupancy is a namespace's timewait table now next to what the window traced there.
type Occupancy struct {
	NetNS              uint32
	Created, Overflows uint64
	// Live counts the namespace's TIME_WAIT sockets, filtered or not: the table
	// tcp_max_tw_buckets limits. -1 when the namespace could not be read (gone since).
	Live          int64
	MaxTWBuckets  int64 // -1 unknown
	PortRangeSize int   // 0 unknown
	// CounterDelta is TcpExtTCPTimeWaitOverflow's increase over the window; -1 unknown.
	CounterDelta int64
	// Unseen deaths, and overflows and births the kernel counted with no event
	// (reconciliation): Overflows + UnattributedOverflows is what the kernel counted.
	Unseen                                    uint64
	UnattributedOverflows, UnattributedBirths uint64
}

// Occupancy joins the window's counts for namespace inode with its snapshot, nil when it
// could not be taken.
func (a *Aggregate) Occupancy(inode uint32, n *snapshot.Namespace) Occupancy {
	o := Occupancy{NetNS: inode, Created: a.CreatedByNetns[inode], Overflows: a.OverflowsByNetns[inode],
		Live: -1, MaxTWBuckets: -1, CounterDelta: -1, Unseen: a.Unseen[inode],
		UnattributedOverflows: a.Unattributed[inode][tracer.FamilyOverflow], UnattributedBirths: a.Unattributed[inode][tracer.FamilyTW]}
	if n == nil {
		return o
	}
	o.Live, o.MaxTWBuckets, o.PortRangeSize = int64(n.TimeWaitTable), n.Limits.MaxTWBuckets, n.Limits.PortRangeSize()
	if a.Baseline != nil {
		if d, ok := n.Counters.Delta(a.Baseline[inode], "TcpExtTCPTimeWaitOverflow"); ok {
			o.CounterDelta = d
		}
	}
	return o
}

// Destination is one destination's live TIME_WAIT sockets next to what the window traced
// towards it.
type Destination struct {
	snapshot.Destination
	Live     int
	Share    float64 // of ip_local_port_range; 0 when the range is unknown
	Created  uint64
	Rate     float64 // timewait sockets created per second over the window
	Forecast Forecast
	// Failures counts the connect() calls towards it that failed in the window, by errno
	// name; Reused the timewait sockets a connect() took over (tcp_tw_reuse) instead.
	Failures map[string]uint64
	Reused   uint64
}

// PortFailures counts the failures for want of a local port (EADDRNOTAVAIL).
func (d *Destination) PortFailures() uint64 { return d.Failures["EADDRNOTAVAIL"] }

// Destinations joins a namespace's live TIME_WAIT sockets per destination (those the
// snapshot's filter kept) with the window's creations, reuses and connect failures,
// busiest first, as of now. A destination connect() failed or reused towards is listed
// even when none of its sockets is left in TIME_WAIT.
func (a *Aggregate) Destinations(n *snapshot.Namespace, now time.Time) []Destination {
	elapsed := now.Sub(a.Since).Seconds()
	size := n.Limits.PortRangeSize()
	kern := kernelOf(n)
	traffic := forecast.Traffic{Lifetime: a.ForecastLifetime()}
	if elapsed > 0 {
		traffic.NamespaceRate = float64(a.CreatedByNetns[n.NetNS]) / elapsed
	}
	out := make([]Destination, 0, len(n.TimeWait))
	row := func(d snapshot.Destination, live int) Destination {
		r := Destination{Destination: d, Live: live, Created: a.Created[d], Reused: a.Reused[d], Failures: map[string]uint64{}}
		if elapsed > 0 {
			r.Rate = float64(r.Created) / elapsed
		}
		if size > 0 {
			r.Share = float64(live) / float64(size)
		}
		t := traffic
		t.Rate, t.Live, t.Established = r.Rate, live, n.Connected[d]
		t.Loopback = d.SAddr.Unmap().IsLoopback() || d.DAddr.Unmap().IsLoopback()
		r.Forecast = forecast.Ports(kern, t)
		return r
	}
	for d, live := range n.TimeWait {
		out = append(out, row(d, live))
	}
	// destinations connect() failed or reused towards, with no TIME_WAIT socket left
	inNetns := func(d snapshot.Destination) bool { return d.NetNS == n.NetNS && n.TimeWait[d] == 0 }
	seen := map[snapshot.Destination]bool{}
	for k := range a.ConnectFails {
		if inNetns(k.Dest) && !seen[k.Dest] {
			seen[k.Dest] = true
			out = append(out, row(k.Dest, 0))
		}
	}
	for d := range a.Reused {
		if inNetns(d) && !seen[d] {
			seen[d] = true
			out = append(out, row(d, 0))
		}
	}
	byDest := map[snapshot.Destination]int{}
	for i := range out {
		byDest[out[i].Destination] = i
	}
	for k, c := range a.ConnectFails {
		if i, ok := byDest[k.Dest]; ok {
			out[i].Failures[k.Errno] += c
		}
	}
	slices.SortStableFunc(out, func(x, y Destination) int { return CompareBusiest(&x, &y) })
	return out
}

// CompareBusiest orders destinations by live TIME_WAIT sockets, then by connect()
// failures for want of a port, then by all failures, most first.
func CompareBusiest(x, y *Destination) int {
	total := func(d *Destination) (n uint64) {
		for _, c := range d.Failures {
			n += c
		}
		return n
	}
	return cmp.Or(cmp.Compare(y.Live, x.Live), cmp.Compare(y.PortFailures(), x.PortFailures()), cmp.Compare(total(y), total(x)))
}

// ForecastLifetime is the mean measured lifetime of TIME_WAIT sockets that expired in the
// window, or what the kernel arms until one is measured.
func (a *Aggregate) ForecastLifetime() time.Duration {
	if l, ok := a.MeanLifetime(tracer.StateTimeWait); ok {
		return l
	}
	return assumedLifetime
}
