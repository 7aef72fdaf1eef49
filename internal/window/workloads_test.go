package window

import (
	"testing"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

// Each cgroup's timewait births, overflows and resets are counted apart, per namespace; the
// timewait sockets a cgroup holds count births minus the deaths of sockets whose birth was
// traced, and carry over to the next window.
func TestAggregateCountsPerCgroup(t *testing.T) {
	w := New(time.Unix(0, 0), nil)
	ev := func(kind tracer.Kind, cgroup uint64, netns uint32, f func(*tracer.Event)) {
		e := tracer.Event{Kind: kind, Cgroup: cgroup, NetNS: netns, Substate: tracer.StateTimeWait}
		if f != nil {
			f(&e)
		}
		w.Add(&e)
	}
	born := func(e *tracer.Event) { e.DurationOK = true }
	for range 3 {
		ev(tracer.KindTWEnter, 100, 7, nil)
	}
	ev(tracer.KindTWEnter, 100, 7, func(e *tracer.Event) { e.Substate = tracer.StateFinWait2 })
	ev(tracer.KindTWEnter, 100, 8, nil) // the same cgroup in another namespace
	ev(tracer.KindTWEnter, 200, 7, nil)
	ev(tracer.KindTWExit, 100, 7, born)
	ev(tracer.KindTWExit, 100, 7, nil) // born before tracing: it was never counted
	ev(tracer.KindTWExit, 200, 7, born)
	ev(tracer.KindTWExit, 200, 7, born) // its birth was lost: never below 0
	ev(tracer.KindTWOverflow, 200, 7, nil)
	ev(tracer.KindReset, 100, 7, func(e *tracer.Event) { e.Reason = "tcp_abort_on_close" })
	ev(tracer.KindReset, 100, 7, func(e *tracer.Event) { e.Recv = true })
	ev(tracer.KindReset, 0, 7, func(e *tracer.Event) { e.Recv, e.NoSocket = true, true })
	ev(tracer.KindState, 300, 7, nil) // counted in the kernel: no workload row of its own

	a := w.Copy()
	c := a.ByCgroup[CgroupKey{100, 7}]
	if c == nil || c.CreatedTimeWait != 3 || c.CreatedFinWait2 != 1 || c.Created() != 4 || c.Overflows != 0 ||
		c.ResetsSent() != 1 || c.ResetsRecv() != 1 || c.Resets[ResetKey{Reason: "tcp_abort_on_close"}] != 1 {
		t.Errorf("cgroup 100 in netns 7: %+v", c)
	}
	if c := a.ByCgroup[CgroupKey{200, 7}]; c == nil || c.Created() != 1 || c.Overflows != 1 {
		t.Errorf("cgroup 200: %+v", c)
	}
	if c := a.ByCgroup[CgroupKey{0, 7}]; c == nil || c.ResetsRecv() != 1 {
		t.Errorf("the unknown cgroup's reset: %+v", c)
	}
	if len(a.ByCgroup) != 4 {
		t.Errorf("%d cgroups counted, want 4 (100 twice, 200, unknown): %v", len(a.ByCgroup), a.ByCgroup)
	}
	want := map[CgroupKey]uint64{{100, 7}: 3, {100, 8}: 1}
	if len(a.TimeWaitNow) != len(want) || a.TimeWaitNow[CgroupKey{100, 7}] != 3 || a.TimeWaitNow[CgroupKey{100, 8}] != 1 {
		t.Errorf("timewait sockets held %v, want %v", a.TimeWaitNow, want)
	}

	ended := w.Restart(time.Unix(10, 0), nil)
	ev(tracer.KindTWExit, 100, 8, born)
	next := w.Copy()
	if len(next.ByCgroup) != 0 || next.TimeWaitNow[CgroupKey{100, 7}] != 3 || len(next.TimeWaitNow) != 1 {
		t.Errorf("the next window: counts %v, held %v; want no counts and cgroup 100's 3 in netns 7", next.ByCgroup, next.TimeWaitNow)
	}
	if ended.TimeWaitNow[CgroupKey{100, 8}] != 1 {
		t.Errorf("the next window's events changed the ended one's: %v", ended.TimeWaitNow)
	}
	// a copy is deep: later events change neither
	ev(tracer.KindReset, 100, 7, func(e *tracer.Event) { e.Reason = "tcp_abort_on_close" })
	if a.ByCgroup[CgroupKey{100, 7}].ResetsSent() != 1 || next.ByCgroup[CgroupKey{100, 7}] != nil {
		t.Error("a copy shares its counts with the window")
	}
}
