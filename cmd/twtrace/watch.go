package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twtrace/twtrace/internal/reconcile"
	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

func watch(args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("watch", "Usage: twtrace watch [flags]\n\nStream TCP events until interrupted (SIGINT/SIGTERM) or --duration.", stdout)
	f := newTraceFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := f.options()
	if err != nil {
		return err
	}
	sess, err := startReconciledSession(f, &opts, stderr)
	if err != nil {
		return err
	}
	defer sess.Close()
	names, src, baseline := sess.names, sess.src, sess.baseline
	t, ctx := sess.t, sess.ctx

	p := newPrinter(stdout, f.output == "json", names)
	if f.output == "text" {
		p.header()
	} else {
		p.record(appendStart(nil, time.Now(), t.Families(), opts.Filter))
	}
	p.unavailable(t.Unavailable())
	rec := newReconciliation(t.Families(), opts.Filter, src, baseline, func(found reconcile.Findings) {
		for i := range found.Unseen {
			tracer.Dispatch(&found.Unseen[i], t.Families(), p.event)
		}
		for _, u := range found.Unattributed {
			p.record(appendUnattributed(nil, time.Now(), u, p.json))
		}
	})
	lostDone, reconciled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(lostDone)
		reportLost(ctx, t, p)
	}()
	go func() {
		defer close(reconciled)
		rec.loop(ctx)
	}()
	runErr := t.Run(ctx, func(e *tracer.Event) {
		rec.observe(e)
		p.event(e)
	}, func() {
		rec.idle()
		p.flush()
	})
	sess.cancel()
	<-lostDone
	<-reconciled
	rec.finish()
	p.stop() // after the reconciliation's last deaths went into the queue
	p.reportLost(t)
	if f.output == "json" {
		if st, err := t.Stats(); err == nil {
			p.record(appendEnd(nil, time.Now(), st))
		}
	}
	p.flush()
	summary(stderr, t)
	reconciledSummary(stderr, rec)
	sess.costSummary(stderr)
	return runErr
}

// printer serialises output from the event loop, the reconciliation and the loss reporter.
// An event whose workload is known already is printed at once; one whose cgroup is to be
// looked up (which may walk the cgroup tree or ask the container runtime, which the event
// reader must never wait for) waits for a goroutine of its own, and so do the events read
// after it, to keep their order.
type printer struct {
	mu       sync.Mutex
	w        *bufio.Writer
	json     bool
	buf      []byte
	lastLost uint64
	names    *workloads
	// waiting[next:] are the events to print once the first one's cgroup is looked up; the
	// reader waits for room beyond maxWaiting of them, as the ring buffer waits for the reader
	waiting    []tracer.Event
	next       int
	room       sync.Cond
	flushAfter bool          // flush once waiting is printed: the reader found the ring buffer empty
	wake       chan struct{} // nil without cgroups to look up, or once stopped
	done       chan struct{}
}

// maxWaiting is how many events may wait behind a cgroup lookup.
const maxWaiting = 4096

func newPrinter(w io.Writer, json bool, names *workloads) *printer {
	p := &printer{w: bufio.NewWriterSize(w, 64<<10), json: json, names: names}
	p.room.L = &p.mu
	if names != nil && names.cgroups {
		p.wake, p.done = make(chan struct{}, 1), make(chan struct{})
		go p.drain(p.wake)
	}
	return p
}

func (p *printer) drain(wake <-chan struct{}) {
	defer close(p.done)
	for range wake {
		p.printWaiting()
	}
	p.printWaiting()
}

// printWaiting prints the waiting events in order, looking their cgroups up without the lock.
func (p *printer) printWaiting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.next < len(p.waiting) {
		id := p.waiting[p.next].Cgroup
		w, known, ready := p.names.cgroupNow(id)
		if !ready {
			p.mu.Unlock()
			w, known = p.names.cgroup(id)
			p.mu.Lock()
		}
		p.write(&p.waiting[p.next], w, known)
		p.next++
		if len(p.waiting)-p.next == maxWaiting-1 {
			p.room.Broadcast()
		}
	}
	p.waiting, p.next = p.waiting[:0], 0
	if p.flushAfter {
		p.w.Flush()
		p.flushAfter = false
	}
}

// stop prints what is waiting; the event loop and the reconciliation have returned.
func (p *printer) stop() {
	if p.wake != nil {
		close(p.wake)
		<-p.done
		p.mu.Lock()
		p.wake = nil
		p.mu.Unlock()
	}
}

func (p *printer) header() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.w.WriteString(textHeader)
	p.w.Flush()
}

func (p *printer) event(e *tracer.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next == len(p.waiting) {
		if w, known, ready := p.names.cgroupNow(e.Cgroup); ready {
			p.write(e, w, known)
			return
		}
		if p.wake == nil { // stopped: nothing to keep waiting for
			w, known := p.names.cgroup(e.Cgroup)
			p.write(e, w, known)
			return
		}
	}
	for len(p.waiting)-p.next >= maxWaiting {
		p.room.Wait()
	}
	if p.next > 0 && len(p.waiting) == cap(p.waiting) { // reuse what is printed rather than grow
		p.waiting, p.next = p.waiting[:copy(p.waiting, p.waiting[p.next:])], 0
	}
	p.waiting = append(p.waiting, *e)
	if len(p.waiting)-p.next == 1 {
		select {
		case p.wake <- struct{}{}:
		default: // already woken
		}
	}
}

// write prints one event, named by its workload if known; p.mu is held.
func (p *printer) write(e *tracer.Event, w workload.Workload, known bool) {
	var named *workload.Workload
	if known {
		named = &w
	}
	if p.json {
		p.buf = appendJSON(p.buf[:0], e, named)
	} else {
		p.buf = appendText(p.buf[:0], e, named)
	}
	p.w.Write(p.buf)
}

// record writes one of the stream's own records and flushes it.
func (p *printer) record(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.w.Write(b)
	p.w.Flush()
}

// flush writes out what is printed, at once or, with events waiting, once they are.
func (p *printer) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next < len(p.waiting) {
		p.flushAfter = true
		return
	}
	p.w.Flush()
}

// unavailable writes a record per event family that was asked for and cannot be traced here.
func (p *printer) unavailable(missing []tracer.MissingFamily) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range missing {
		p.buf = appendUnavailable(p.buf[:0], time.Now(), m, p.json)
		p.w.Write(p.buf)
	}
	p.w.Flush()
}

func appendUnavailable(b []byte, now time.Time, m tracer.MissingFamily, json bool) []byte {
	if !json {
		return fmt.Appendf(b, "%-12s UNAVAILABLE %s events are not traced: %s\n", now.Format("15:04:05.000"), m.Family, m.Reason)
	}
	b = append(b, `{"ts":"`...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","kind":"unavailable","events":"`...)
	b = append(b, m.Family.String()...)
	b = append(b, `","reason":`...)
	b = appendString(b, []byte(m.Reason))
	return append(b, "}\n"...)
}

// reportLost writes a record whenever the kernel counted events it could not deliver.
func (p *printer) reportLost(t *tracer.Tracer) {
	s, err := t.Stats()
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.Lost <= p.lastLost {
		return
	}
	p.buf = appendLost(p.buf[:0], time.Now(), s.Lost-p.lastLost, s.Lost, s.LostPerCPU, p.json)
	p.lastLost = s.Lost
	p.w.Write(p.buf)
	p.w.Flush()
}

// appendLost writes a lost record: n events since the last one, total so far, and the
// total of each CPU.
func appendLost(b []byte, now time.Time, n, total uint64, perCPU []uint64, json bool) []byte {
	if !json {
		return fmt.Appendf(b, "%-12s LOST %d events (ring buffer full; %d in total, per CPU %v): raise --ringbuf-size or narrow the filters\n",
			now.Format("15:04:05.000"), n, total, perCPU)
	}
	b = append(b, `{"ts":"`...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano)
	b = fmt.Appendf(b, `","kind":"lost","count":%d,"total":%d,"per_cpu":[`, n, total)
	for i, v := range perCPU {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, v, 10)
	}
	return append(b, "]}\n"...)
}

func reportLost(ctx context.Context, t *tracer.Tracer, p *printer) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.reportLost(t)
		}
	}
}

func summary(w io.Writer, t *tracer.Tracer) {
	s, err := t.Stats()
	if err != nil {
		fmt.Fprintf(w, "twtrace: read counters: %s\n", err)
		return
	}
	fmt.Fprintf(w, "twtrace: %d events (of %d the kernel wrote), %d lost %v, %d missed (hook fired while its program ran on that CPU), %d filtered in the kernel, %d undecodable; unknown: %d in_old (socket seen mid-life), %d lifetimes (timewait born before start)\n",
		s.Decoded, s.Emitted, s.Lost, s.LostPerCPU, s.Missed, s.Filtered, s.Corrupt, s.SockUntracked, s.TWUnknownBirth)
	if s.OverflowUnattributed > 0 || s.OverflowInferred > 0 {
		fmt.Fprintf(w, "twtrace: overflows: %d counted by the kernel at closes twtrace did not see (no event), %d closes judged from the timewait table's fill level (may be wrong)\n",
			s.OverflowUnattributed, s.OverflowInferred)
	}
	if s.RecordNoRoom > 0 || s.RecordStale > 0 {
		fmt.Fprintf(w, "twtrace: records (%s): %d sockets unrecorded, their bucket full (owner or lifetime unknown), %d records taken over from sockets whose end was missed\n",
			t.Records(), s.RecordNoRoom, s.RecordStale)
	}
	if missing := t.Unavailable(); len(missing) > 0 {
		var names []string
		for _, m := range missing {
			names = append(names, m.Family.String())
		}
		fmt.Fprintf(w, "twtrace: not traced, unavailable on this kernel: %s (the warnings at start say why)\n", strings.Join(names, ", "))
	}
}
