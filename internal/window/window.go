// Package window is what twtrace traced over a span of time, and how it meets the kernel's
// live state: events fold into a Window; the views, doctor and the exporter read copies
// of it and join them with snapshots (internal/snapshot) taken outside its lock.
package window

import (
	"maps"
	"sync"
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/tracer"
)

// Window folds events under its lock. Readers copy under the lock and do their I/O
// (sock_diag, sysctls, counters) outside it, so the ring buffer reader never waits for
// the kernel's socket tables. Safe for concurrent use.
type Window struct {
	mu  sync.Mutex
	agg *Aggregate
}

// New starts a window at since. baseline holds the kernel's counters per namespace at
// that moment, for deltas; nil when they are not known (a recording).
func New(since time.Time, baseline map[uint32]snapshot.Counters) *Window {
	a := NewAggregate(since)
	a.Baseline = baseline
	return &Window{agg: a}
}

// Add folds one event in.
func (w *Window) Add(e *tracer.Event) {
	w.mu.Lock()
	w.agg.Add(e)
	w.mu.Unlock()
}

// Copy returns what the window holds now.
func (w *Window) Copy() *Aggregate {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.agg.Clone()
}

// Restart ends the window and starts the next one at now with its baseline; it returns
// the window that ended. The timewait sockets each cgroup holds carry over.
func (w *Window) Restart(now time.Time, baseline map[uint32]snapshot.Counters) *Aggregate {
	next := NewAggregate(now)
	next.Baseline = baseline
	w.mu.Lock()
	defer w.mu.Unlock()
	ended := w.agg
	next.TimeWaitNow = maps.Clone(ended.TimeWaitNow)
	w.agg = next
	return ended
}
