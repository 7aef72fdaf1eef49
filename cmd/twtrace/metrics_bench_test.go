package main

import (
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
)

// BenchmarkEventMetricsAdd is serve's per-event cost (its counters and its window): a
// timewait birth, its death with a lifetime, and an overflow, in turn.
func BenchmarkEventMetricsAdd(b *testing.B) {
	add := exporterSink(newEventMetrics(defaultTopWorkloads, 20), window.New(time.Now(), nil))
	events := []tracer.Event{
		{Kind: tracer.KindTWEnter, NetNS: 4026531840, Substate: tracer.StateTimeWait},
		{Kind: tracer.KindTWExit, NetNS: 4026531840, Substate: tracer.StateTimeWait, Cause: tracer.CauseExpired,
			Duration: 60300 * time.Millisecond, DurationOK: true},
		{Kind: tracer.KindTWOverflow, NetNS: 4026531840},
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		add(&events[i])
		if i++; i == len(events) {
			i = 0
		}
	}
}
