package window

import (
	"maps"

	"github.com/twtrace/twtrace/tracer"
)

// CgroupKey is what the window counts a workload's sockets by: the cgroup v2 id of the task
// that created them (0: unknown) and their network namespace. Naming the cgroup is left to
// the readers (internal/workload), outside the window's lock.
type CgroupKey struct {
	Cgroup uint64
	NetNS  uint32
}

// CgroupCounts is what the window traced of one cgroup's sockets in one namespace.
type CgroupCounts struct {
	CreatedTimeWait uint64 // timewait sockets born in TIME_WAIT
	CreatedFinWait2 uint64 // born as orphaned FIN_WAIT2
	Overflows       uint64
	Resets          map[ResetKey]uint64 // nil until the first
	ConnectFails    map[string]uint64   // failed connect()s the cgroup's tasks called, by errno name; nil until the first
}

// Created is the timewait sockets born, both substates.
func (c *CgroupCounts) Created() uint64 { return c.CreatedTimeWait + c.CreatedFinWait2 }

// ResetsSent and ResetsRecv total the resets by direction.
func (c *CgroupCounts) ResetsSent() uint64 { return c.resets(false) }
func (c *CgroupCounts) ResetsRecv() uint64 { return c.resets(true) }

// ConnectFailures totals the failed connect()s, every errno.
func (c *CgroupCounts) ConnectFailures() uint64 {
	var n uint64
	for _, v := range c.ConnectFails {
		n += v
	}
	return n
}

func (c *CgroupCounts) resets(recv bool) uint64 {
	var n uint64
	for k, v := range c.Resets {
		if k.Recv == recv {
			n += v
		}
	}
	return n
}

func (c *CgroupCounts) clone() *CgroupCounts {
	d := *c
	d.Resets = maps.Clone(c.Resets)
	d.ConnectFails = maps.Clone(c.ConnectFails)
	return &d
}

// cgroupCounts returns e's cgroup's counts, created on its first event.
func (a *Aggregate) cgroupCounts(e *tracer.Event) *CgroupCounts {
	k := CgroupKey{Cgroup: e.Cgroup, NetNS: e.NetNS}
	c := a.ByCgroup[k]
	if c == nil {
		c = &CgroupCounts{}
		a.ByCgroup[k] = c
	}
	return c
}

// addWorkload folds a timewait, overflow, reset or connect event into its cgroup's counts and the
// timewait sockets each cgroup holds.
func (a *Aggregate) addWorkload(e *tracer.Event) {
	k := CgroupKey{Cgroup: e.Cgroup, NetNS: e.NetNS}
	switch e.Kind {
	case tracer.KindTWEnter:
		c := a.cgroupCounts(e)
		if e.Substate == tracer.StateFinWait2 {
			c.CreatedFinWait2++
		} else {
			c.CreatedTimeWait++
		}
		a.TimeWaitNow[k]++
	case tracer.KindTWExit:
		// a death whose birth was traced (its lifetime known, or found unseen by
		// reconciliation, which only follows traced births): its birth was counted (never
		// below 0, should a birth have been lost)
		traced := e.DurationOK || e.Cause == tracer.CauseUnseen
		if n := a.TimeWaitNow[k]; traced && n > 1 {
			a.TimeWaitNow[k] = n - 1
		} else if traced {
			delete(a.TimeWaitNow, k)
		}
	case tracer.KindTWOverflow:
		a.cgroupCounts(e).Overflows++
	case tracer.KindReset:
		c := a.cgroupCounts(e)
		if c.Resets == nil {
			c.Resets = map[ResetKey]uint64{}
		}
		c.Resets[ResetKey{Recv: e.Recv, Reason: e.Reason}]++
	case tracer.KindConnectFail:
		c := a.cgroupCounts(e)
		if c.ConnectFails == nil {
			c.ConnectFails = map[string]uint64{}
		}
		c.ConnectFails[e.ErrnoName()]++
	}
}
