package main

import (
	"net/netip"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/reconcile"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/tracer"
)

// gone is a namespace whose timewait table is empty, as read at a fixed time.
type gone struct{ at time.Time }

func (g gone) Take(inode uint32) (*snapshot.Namespace, error) {
	return &snapshot.Namespace{NetNS: inode, Time: g.at}, nil
}

// A reader lagging seconds behind the kernel (a loaded machine) must not make a death still
// in the ring buffer look unseen: a snapshot is compared only once the reader has found the
// ring buffer empty past it, whatever the wall clock says.
func TestReconciliationWaitsForTheReader(t *testing.T) {
	now := time.Now()
	var found []tracer.Event
	c := newReconciliation(tracer.FamilyTW, tracer.Filter{NetNS: 7}, gone{now.Add(-3 * time.Second)}, nil,
		func(f reconcile.Findings) { found = append(found, f.Unseen...) })
	lo := netip.MustParseAddr("127.0.0.1")
	c.observe(&tracer.Event{Kind: tracer.KindTWEnter, Time: now.Add(-5 * time.Second), NetNS: 7, Family: 4,
		SAddr: lo, DAddr: lo, SPort: 40000, DPort: 8080, Substate: tracer.StateTimeWait})
	c.check()
	c.check()
	if len(found) != 0 {
		t.Fatalf("compared before the reader caught up: %+v", found)
	}
	c.idle() // the ring buffer is empty now, 3 s past the snapshot: its death was never written
	c.check()
	if len(found) != 1 || found[0].Cause != tracer.CauseUnseen || found[0].SPort != 40000 {
		t.Fatalf("want the socket's death found unseen once the reader caught up, got %+v", found)
	}
}

// Checks cost at most 1/reconcileSpacing of a CPU: a check that takes long (a namespace
// with a hundred thousand timewait sockets) spaces the next one out; short ones keep the
// interval.
func TestNextCheckKeepsTheCostBounded(t *testing.T) {
	for _, took := range []time.Duration{0, time.Millisecond, 19 * time.Millisecond, 20 * time.Millisecond,
		21 * time.Millisecond, 100 * time.Millisecond, 3 * time.Second} {
		in := nextCheckIn(took)
		if in < reconcileInterval {
			t.Errorf("a check that took %v: next in %v, sooner than the interval %v", took, in, reconcileInterval)
		}
		if share := float64(took) / float64(in); share > 0.02 {
			t.Errorf("a check that took %v: next in %v, %.1f%% of a CPU spent checking", took, in, 100*share)
		}
	}
	if in := nextCheckIn(5 * time.Millisecond); in != reconcileInterval {
		t.Errorf("a 5 ms check: next in %v, want the interval %v", in, reconcileInterval)
	}
	if in := nextCheckIn(100 * time.Millisecond); in != 5*time.Second {
		t.Errorf("a 100 ms check: next in %v, want 5s", in)
	}
}
