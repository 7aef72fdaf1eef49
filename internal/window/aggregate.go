package window

import (
	"maps"
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/tracer"
)

// LifetimeKey splits timewait lifetimes by how the socket ended.
type LifetimeKey struct {
	Substate tracer.State
	Cause    tracer.Cause
	Detail   tracer.Detail
}

// ResetKey counts resets by direction and reason.
type ResetKey struct {
	Recv   bool
	Reason string
}

// ConnectKey counts failed connect()s by destination and errno name.
type ConnectKey struct {
	Dest  snapshot.Destination
	Errno string // as tracer.Event.ErrnoName names it: "EADDRNOTAVAIL", or "unknown"
}

// ProcessKey names a socket owner; PID 0 is unknown.
type ProcessKey struct {
	PID  uint32
	Comm [16]byte
}

// Aggregate folds events into the numbers the views report. It is not safe for
// concurrent use (Window is); an existing key costs no allocation.
type Aggregate struct {
	Since time.Time

	Lifetimes        map[LifetimeKey]*Histogram
	Created          map[snapshot.Destination]uint64 // tw_enter per destination
	CreatedByNetns   map[uint32]uint64
	Overflows        map[snapshot.Destination]uint64
	OverflowsByNetns map[uint32]uint64
	Resets           map[ResetKey]uint64
	ResetsByProcess  map[ProcessKey]uint64
	ConnectFails     map[ConnectKey]uint64
	// Reused counts, per destination, the timewait sockets a connect() took over
	// (tcp_tw_reuse): each a connection that did not need a free port.
	Reused map[snapshot.Destination]uint64
	Netns  map[uint32]bool // every namespace a timewait, overflow, reset or connect event came from
	// Unseen counts timewait deaths no program reported, found by reconciliation (cause
	// unseen), per namespace; Unattributed what the kernel counted beyond the events, per
	// namespace and family (internal/reconcile).
	Unseen       map[uint32]uint64
	Unattributed map[uint32]map[tracer.Families]uint64
	ByCgroup     map[CgroupKey]*CgroupCounts
	// TimeWaitNow counts, per cgroup, the timewait sockets born while tracing that are alive
	// now: unlike the rest, it carries over from one window to the next (Window.Restart).
	TimeWaitNow map[CgroupKey]uint64
	// Baseline holds the kernel's counters per namespace at Since, for deltas (a namespace
	// without one was born since: its counters started at 0); nil when unknown.
	Baseline map[uint32]snapshot.Counters
}

// NewAggregate starts an empty aggregate at since.
func NewAggregate(since time.Time) *Aggregate {
	return &Aggregate{
		Since:            since,
		Lifetimes:        map[LifetimeKey]*Histogram{},
		Created:          map[snapshot.Destination]uint64{},
		CreatedByNetns:   map[uint32]uint64{},
		Overflows:        map[snapshot.Destination]uint64{},
		OverflowsByNetns: map[uint32]uint64{},
		Resets:           map[ResetKey]uint64{},
		ResetsByProcess:  map[ProcessKey]uint64{},
		ConnectFails:     map[ConnectKey]uint64{},
		Reused:           map[snapshot.Destination]uint64{},
		Netns:            map[uint32]bool{},
		Unseen:           map[uint32]uint64{},
		Unattributed:     map[uint32]map[tracer.Families]uint64{},
		ByCgroup:         map[CgroupKey]*CgroupCounts{},
		TimeWaitNow:      map[CgroupKey]uint64{},
	}
}

func destinationOf(e *tracer.Event) snapshot.Destination {
	return snapshot.Destination{NetNS: e.NetNS, SAddr: e.SAddr, DAddr: e.DAddr, DPort: e.DPort}
}

// Add folds one event in. State transitions are left out: the kernel counts them
// (tracer.Transitions) and a live view never receives them, so a replayed recording,
// which has them, must not list the namespaces they came from either.
func (a *Aggregate) Add(e *tracer.Event) {
	if e.Kind == tracer.KindState {
		return
	}
	a.Netns[e.NetNS] = true
	a.addWorkload(e)
	switch e.Kind {
	case tracer.KindTWEnter:
		a.Created[destinationOf(e)]++
		a.CreatedByNetns[e.NetNS]++
	case tracer.KindTWExit:
		if e.Cause == tracer.CauseUnseen {
			a.Unseen[e.NetNS]++
		}
		if e.Cause == tracer.CauseKilled && e.Detail == tracer.DetailReuse {
			a.Reused[destinationOf(e)]++
		}
		if !e.DurationOK {
			return
		}
		k := LifetimeKey{Substate: e.Substate, Cause: e.Cause, Detail: e.Detail}
		h := a.Lifetimes[k]
		if h == nil {
			h = &Histogram{}
			a.Lifetimes[k] = h
		}
		h.Add(e.Duration)
	case tracer.KindTWOverflow:
		a.Overflows[destinationOf(e)]++
		a.OverflowsByNetns[e.NetNS]++
	case tracer.KindReset:
		a.Resets[ResetKey{Recv: e.Recv, Reason: e.Reason}]++
		a.ResetsByProcess[ProcessKey{PID: e.PID, Comm: e.Comm}]++
	case tracer.KindConnectFail:
		a.ConnectFails[ConnectKey{Dest: destinationOf(e), Errno: e.ErrnoName()}]++
	}
}

// AddUnattributed folds in n counts of family the kernel made in namespace ns with no event.
func (a *Aggregate) AddUnattributed(ns uint32, family tracer.Families, n uint64) {
	a.Netns[ns] = true
	if a.Unattributed[ns] == nil {
		a.Unattributed[ns] = map[tracer.Families]uint64{}
	}
	a.Unattributed[ns][family] += n
}

// Reconciled sums what reconciliation found: deaths unseen, counts unattributed by family.
func (a *Aggregate) Reconciled() (unseen uint64, unattributed map[tracer.Families]uint64) {
	unattributed = map[tracer.Families]uint64{}
	for _, n := range a.Unseen {
		unseen += n
	}
	for _, byFamily := range a.Unattributed {
		for f, n := range byFamily {
			unattributed[f] += n
		}
	}
	return unseen, unattributed
}

// MeanLifetime is the mean measured lifetime of timewait sockets that expired in
// substate, and whether any was measured.
func (a *Aggregate) MeanLifetime(substate tracer.State) (time.Duration, bool) {
	var sum time.Duration
	var n uint64
	for k, h := range a.Lifetimes {
		if k.Substate == substate && k.Cause == tracer.CauseExpired {
			for _, d := range h.samples {
				sum += d
			}
			n += uint64(len(h.samples))
		}
	}
	if n == 0 {
		return 0, false
	}
	return sum / time.Duration(n), true
}

// Clone copies the aggregate, histograms included.
func (a *Aggregate) Clone() *Aggregate {
	c := &Aggregate{
		Since:            a.Since,
		Lifetimes:        make(map[LifetimeKey]*Histogram, len(a.Lifetimes)),
		Created:          maps.Clone(a.Created),
		CreatedByNetns:   maps.Clone(a.CreatedByNetns),
		Overflows:        maps.Clone(a.Overflows),
		OverflowsByNetns: maps.Clone(a.OverflowsByNetns),
		Resets:           maps.Clone(a.Resets),
		ResetsByProcess:  maps.Clone(a.ResetsByProcess),
		ConnectFails:     maps.Clone(a.ConnectFails),
		Reused:           maps.Clone(a.Reused),
		Netns:            maps.Clone(a.Netns),
		Unseen:           maps.Clone(a.Unseen),
		Unattributed:     make(map[uint32]map[tracer.Families]uint64, len(a.Unattributed)),
		ByCgroup:         make(map[CgroupKey]*CgroupCounts, len(a.ByCgroup)),
		TimeWaitNow:      maps.Clone(a.TimeWaitNow),
		Baseline:         a.Baseline, // never written after the start
	}
	for k, cc := range a.ByCgroup {
		c.ByCgroup[k] = cc.clone()
	}
	for k, h := range a.Lifetimes {
		c.Lifetimes[k] = h.Clone()
	}
	for ns, byFamily := range a.Unattributed {
		c.Unattributed[ns] = maps.Clone(byFamily)
	}
	return c
}
