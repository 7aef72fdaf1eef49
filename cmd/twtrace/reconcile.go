package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twtrace/twtrace/internal/reconcile"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
)

// reconcileInterval is how often the traced namespaces are compared with the kernel, at most.
const reconcileInterval = time.Second

// reconcileSpacing is how many times its own duration a check waits, from its start, before
// the next: a namespace holding 100,000 timewait sockets takes a tenth of a second to list,
// and checking it every second would cost a tenth of a CPU; spaced so, checks take at most
// 1/reconcileSpacing of a CPU whatever the namespaces hold.
const reconcileSpacing = 50

// nextCheckIn is how long after the start of a check that took took the next one starts.
func nextCheckIn(took time.Duration) time.Duration {
	return max(reconcileInterval, reconcileSpacing*took)
}

// reconciliation compares what the programs report with what the kernel shows and counts
// (internal/reconcile): every reconcileInterval while tracing, and once the stream is
// drained. What it finds goes to deliver, which the reader and the loop both call.
type reconciliation struct {
	r       *reconcile.Reconciler
	src     snapshotter
	only    uint32
	deliver func(reconcile.Findings)
	final   []*snapshot.Namespace
	// readUpTo is when the reader last found the ring buffer empty (unix ns): every event
	// submitted before then has been observed. A loaded machine's reader lags behind the
	// kernel by seconds; a snapshot is compared only with events read past its time.
	readUpTo atomic.Int64
}

// countedFamilies are the families whose events compare with the kernel's per-namespace
// counters: traced, and reported for every socket (no socket filter; the namespace filter
// picks whole namespaces).
func countedFamilies(traced tracer.Families, f tracer.Filter) tracer.Families {
	f.NetNS = 0
	if f != (tracer.Filter{}) {
		return 0
	}
	return traced & (tracer.FamilyOverflow | tracer.FamilyTW)
}

// newReconciliation starts reconciling the events of families traced under filter, from
// the counters in baseline (taken before tracing started), with snapshots from src that
// list timewait sockets.
func newReconciliation(traced tracer.Families, filter tracer.Filter, src snapshotter,
	baseline map[uint32]snapshot.Counters, deliver func(reconcile.Findings)) *reconciliation {
	return &reconciliation{r: reconcile.New(countedFamilies(traced, filter), baseline), src: src,
		only: filter.NetNS, deliver: deliver}
}

// idle is the reader's idle callback (tracer.Run): the ring buffer is empty now.
func (c *reconciliation) idle() { c.readUpTo.Store(time.Now().UnixNano()) }

// observe folds in one delivered event, and delivers the unseen death its birth reveals.
func (c *reconciliation) observe(e *tracer.Event) {
	if e.Kind == tracer.KindState || e.Kind == tracer.KindReset {
		return
	}
	if unseen, found := c.r.Observe(e); found {
		c.deliver(reconcile.Findings{Unseen: []tracer.Event{unseen}})
	}
}

// loop compares every reconcileInterval, or as far apart as nextCheckIn says, until ctx
// ends, then takes the snapshots finish compares once the stream is drained.
func (c *reconciliation) loop(ctx context.Context) {
	next := time.NewTimer(reconcileInterval)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			c.final = c.snapshots()
			return
		case <-next.C:
			start := time.Now()
			c.check()
			next.Reset(time.Until(start.Add(nextCheckIn(time.Since(start)))))
		}
	}
}

// check takes the snapshots to compare and compares those the reader has read past.
func (c *reconciliation) check() {
	for _, n := range c.snapshots() {
		c.deliver(c.r.Check(n, time.Unix(0, c.readUpTo.Load())))
	}
}

// finish compares the snapshots taken when tracing ended, after loop has returned and the
// stream has been drained.
func (c *reconciliation) finish() {
	for _, n := range c.final {
		c.deliver(c.r.Finish(n))
	}
}

// snapshots reads the namespaces to compare: the one filtered on, or every one with lives
// or counts reported. A namespace gone since is skipped: its sockets went with it.
func (c *reconciliation) snapshots() []*snapshot.Namespace {
	inodes := c.r.Namespaces()
	if c.only != 0 {
		inodes = []uint32{c.only}
	}
	slices.Sort(inodes)
	var out []*snapshot.Namespace
	for _, inode := range inodes {
		if n, err := c.src.Take(inode); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// foldFindings folds what reconciliation finds into a window: the unseen deaths as
// events, the unattributed counts beside them.
func foldFindings(win *window.Window) func(reconcile.Findings) {
	return func(found reconcile.Findings) {
		for i := range found.Unseen {
			win.Add(&found.Unseen[i])
		}
		for _, u := range found.Unattributed {
			win.AddUnattributed(u.NetNS, u.Family, u.Count)
		}
	}
}

// filteredNamespace lists the namespace the filter keeps, none when it keeps every one.
func filteredNamespace(f tracer.Filter) []uint32 {
	if f.NetNS == 0 {
		return nil
	}
	return []uint32{f.NetNS}
}

// reconciledSummary is the exit summary's line on what reconciliation found.
func reconciledSummary(w io.Writer, c *reconciliation) {
	unseen, unattributed := c.r.Totals()
	fmt.Fprintf(w, "twtrace: reconciled with the kernel: %d timewait deaths unseen (gone from sock_diag, no death reported), "+
		"%d overflows and %d timewait births counted by the kernel with no event\n",
		unseen, unattributed[tracer.FamilyOverflow], unattributed[tracer.FamilyTW])
}

// appendUnattributed writes an unattributed record: counts of a family the kernel made in a
// namespace with no event (README, "JSON schema").
func appendUnattributed(b []byte, now time.Time, u reconcile.Unattributed, json bool) []byte {
	if !json {
		return fmt.Appendf(b, "%-12s UNATTRIBUTED %d %s in netns %d counted by the kernel with no event (%d in total)\n",
			now.Format("15:04:05.000"), u.Count, unattributedNoun(u.Family), u.NetNS, u.Total)
	}
	b = append(b, `{"ts":"`...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","kind":"unattributed","events":"`...)
	b = append(b, u.Family.String()...)
	b = append(b, `","netns":`...)
	b = strconv.AppendUint(b, uint64(u.NetNS), 10)
	b = append(b, `,"count":`...)
	b = strconv.AppendUint(b, u.Count, 10)
	b = append(b, `,"total":`...)
	b = strconv.AppendUint(b, u.Total, 10)
	return append(b, "}\n"...)
}

func unattributedNoun(f tracer.Families) string {
	if f == tracer.FamilyTW {
		return "timewait births"
	}
	return "overflows"
}
