package window

import (
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/tracer"
	"net/netip"
	"testing"
	"time"
)

func TestHistogramPercentilesAndBuckets(t *testing.T) {
	var h Histogram
	for i := 1; i <= 100; i++ {
		h.Add(time.Duration(i) * time.Millisecond)
	}
	if h.Count != 100 || h.Min != time.Millisecond || h.Max != 100*time.Millisecond || !h.Exact() {
		t.Fatalf("count %d min %v max %v", h.Count, h.Min, h.Max)
	}
	if p := h.Percentile(0.5); p != 50*time.Millisecond {
		t.Errorf("p50 %v, want 50ms", p)
	}
	if p := h.Percentile(0.99); p != 99*time.Millisecond {
		t.Errorf("p99 %v, want 99ms", p)
	}
	// log2 buckets: [1,2) [2,4) [4,8) ... [64,128) ms
	want := map[int]uint64{1: 1, 2: 2, 3: 4, 4: 8, 5: 16, 6: 32, 7: 37}
	for i, n := range h.Buckets {
		if n != want[i] {
			t.Errorf("bucket %d: %d, want %d", i, n, want[i])
		}
	}
	h.Add(500 * time.Microsecond)
	if h.Buckets[0] != 1 || h.Min != 500*time.Microsecond {
		t.Errorf("sub-millisecond value: bucket0 %d min %v", h.Buckets[0], h.Min)
	}
}

func TestAggregateFoldsEvents(t *testing.T) {
	a := NewAggregate(time.Unix(0, 0))
	dst := snapshot.Destination{NetNS: 7, SAddr: netip.MustParseAddr("10.0.0.1"), DAddr: netip.MustParseAddr("10.0.0.2"), DPort: 443}
	base := tracer.Event{NetNS: 7, SAddr: dst.SAddr, DAddr: dst.DAddr, DPort: 443, SPort: 40000}
	for i := 0; i < 3; i++ {
		e := base
		e.Kind = tracer.KindTWEnter
		a.Add(&e)
		e.Kind, e.Substate, e.Cause, e.Duration, e.DurationOK = tracer.KindTWExit, tracer.StateTimeWait, tracer.CauseExpired, 60*time.Second, true
		a.Add(&e)
	}
	e := base
	e.Kind, e.Substate, e.Cause, e.Detail, e.DurationOK = tracer.KindTWExit, tracer.StateTimeWait, tracer.CauseKilled, tracer.DetailNetnsExit, false
	a.Add(&e) // unknown lifetime: not in any histogram
	e.Kind = tracer.KindTWOverflow
	a.Add(&e)
	e.Kind, e.Reason, e.PID = tracer.KindReset, "tcp_abort_on_close", 42
	a.Add(&e)

	state := base
	state.Kind, state.NetNS = tracer.KindState, 9
	a.Add(&state) // counted by the kernel, not here
	if len(a.Netns) != 1 || !a.Netns[7] {
		t.Errorf("namespaces %v, want only 7: a state event adds none", a.Netns)
	}
	if a.Created[dst] != 3 || a.CreatedByNetns[7] != 3 || a.Overflows[dst] != 1 || a.OverflowsByNetns[7] != 1 {
		t.Errorf("created %v overflows %v", a.Created, a.Overflows)
	}
	h := a.Lifetimes[LifetimeKey{tracer.StateTimeWait, tracer.CauseExpired, tracer.DetailNone}]
	if h == nil || h.Count != 3 || len(a.Lifetimes) != 1 {
		t.Fatalf("lifetimes %v", a.Lifetimes)
	}
	if m, ok := a.MeanLifetime(tracer.StateTimeWait); !ok || m != 60*time.Second {
		t.Errorf("mean lifetime %v %v", m, ok)
	}
	if a.Resets[ResetKey{Reason: "tcp_abort_on_close"}] != 1 || a.ResetsByProcess[ProcessKey{PID: 42}] != 1 {
		t.Errorf("resets %v by process %v", a.Resets, a.ResetsByProcess)
	}
}

func BenchmarkAggregateAdd(b *testing.B) {
	a := NewAggregate(time.Now())
	e := tracer.Event{Kind: tracer.KindTWEnter, OldState: tracer.StateFinWait2, NewState: tracer.StateTimeWait, NetNS: 1,
		SAddr: netip.MustParseAddr("10.0.0.1"), DAddr: netip.MustParseAddr("10.0.0.2"), DPort: 443}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		a.Add(&e)
	}
}
