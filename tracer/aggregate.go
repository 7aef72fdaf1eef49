package tracer

import (
	"time"
)

// LifetimeKey splits timewait lifetimes by how the socket ended.
type LifetimeKey struct {
	Substate State
	Cause    Cause
	Detail   Detail
}

// ResetKey counts resets by direction and reason.
type ResetKey struct {
	Recv   bool
	Reason string
}

// ProcessKey names a socket owner; PID 0 is unknown.
type ProcessKey struct {
	PID  uint32
	Comm [16]byte
}

// Aggregate folds events into the numbers the views report. It is not safe for
// concurrent use; an existing key costs no allocation.
type Aggregate struct {
	Since time.Time

	Transitions      map[[2]State]uint64
	Lifetimes        map[LifetimeKey]*Histogram
	Created          map[Destination]uint64 // tw_enter per destination
	CreatedByNetns   map[uint32]uint64
	Overflows        map[Destination]uint64
	OverflowsByNetns map[uint32]uint64
	Resets           map[ResetKey]uint64
	ResetsByProcess  map[ProcessKey]uint64
	Netns            map[uint32]bool // every namespace an event came from
}

// NewAggregate starts an empty aggregate at since.
func NewAggregate(since time.Time) *Aggregate {
	return &Aggregate{
		Since:            since,
		Transitions:      map[[2]State]uint64{},
		Lifetimes:        map[LifetimeKey]*Histogram{},
		Created:          map[Destination]uint64{},
		CreatedByNetns:   map[uint32]uint64{},
		Overflows:        map[Destination]uint64{},
		OverflowsByNetns: map[uint32]uint64{},
		Resets:           map[ResetKey]uint64{},
		ResetsByProcess:  map[ProcessKey]uint64{},
		Netns:            map[uint32]bool{},
	}
}

func destinationOf(e *Event) Destination {
	return Destination{NetNS: e.NetNS, SAddr: e.SAddr, DAddr: e.DAddr, DPort: e.DPort}
}

// Add folds one event in.
func (a *Aggregate) Add(e *Event) {
	a.Netns[e.NetNS] = true
	switch e.Kind {
	case KindState:
		a.Transitions[[2]State{e.OldState, e.NewState}]++
	case KindTWEnter:
		a.Created[destinationOf(e)]++
		a.CreatedByNetns[e.NetNS]++
	case KindTWExit:
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
	case KindTWOverflow:
		a.Overflows[destinationOf(e)]++
		a.OverflowsByNetns[e.NetNS]++
	case KindReset:
		a.Resets[ResetKey{Recv: e.Recv, Reason: e.Reason}]++
		a.ResetsByProcess[ProcessKey{PID: e.PID, Comm: e.Comm}]++
	}
}

// MeanLifetime is the mean measured lifetime of timewait sockets that expired in
// substate, and whether any was measured.
func (a *Aggregate) MeanLifetime(substate State) (time.Duration, bool) {
	var sum time.Duration
	var n uint64
	for k, h := range a.Lifetimes {
		if k.Substate == substate && k.Cause == CauseExpired {
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

// Forecast says when a destination runs out of local ports: with rate new timewait
// sockets per second each living lifetime, it settles at rate*lifetime sockets; below
// the range size it is not at risk, otherwise it fills the free ports at rate.
type Forecast struct {
	AtRisk      bool
	SteadyState float64       // sockets in TIME_WAIT once creation and expiry balance
	Exhaustion  time.Duration // from now, when AtRisk
}

// ForecastPorts applies Forecast's model to live sockets now, in a range of size ports.
func ForecastPorts(live int, rate float64, lifetime time.Duration, size int) Forecast {
	f := Forecast{SteadyState: rate * lifetime.Seconds()}
	if size <= 0 || f.SteadyState < float64(size) {
		return f
	}
	f.AtRisk = true
	if free := size - live; free > 0 && rate > 0 {
		f.Exhaustion = time.Duration(float64(free) / rate * float64(time.Second)).Round(time.Millisecond)
	}
	return f
}
