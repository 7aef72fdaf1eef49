package reconcile

import (
	"net/netip"
	"testing"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

// BenchmarkObserveChurn folds a churn's timewait lives into the reconciler: each birth
// and, 100,000 births later, its death (100,000 lives held, as under churn -close server),
// per event (a birth's time is kept until a check: as many as a second's births in the tool).
func BenchmarkObserveChurn(b *testing.B) {
	const held = 100_000
	r := New(tracer.FamilyTW, nil)
	var e tracer.Event // one, reused, as the reader's
	ev := func(kind tracer.Kind, i int) *tracer.Event {
		e = tracer.Event{Kind: kind, Time: t0.Add(time.Duration(i) * time.Microsecond), NetNS: 7, Family: 4,
			SAddr: netip.AddrFrom4([4]byte{127, 0, 0, 1}), DAddr: netip.AddrFrom4([4]byte{127, 0, byte(i >> 16), 1}),
			SPort: 8080, DPort: uint16(i), Substate: tracer.StateTimeWait}
		return &e
	}
	for i := range held {
		r.Observe(ev(tracer.KindTWEnter, i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N / 2 {
		r.Observe(ev(tracer.KindTWExit, i))
		r.Observe(ev(tracer.KindTWEnter, held+i))
	}
}
