package tracer

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// collector runs a tracer and keeps a copy of every event it delivers.
type collector struct {
	tr     *Tracer
	mu     sync.Mutex
	events []Event
	cancel context.CancelFunc
	done   chan error
}

func startTracer(t *testing.T, opts Options) *collector {
	t.Helper()
	return startTracerHiding(t, opts, nil)
}

// startTracerHiding starts a tracer that treats the hidden kernel targets as missing.
func startTracerHiding(t *testing.T, opts Options, hidden map[string]bool) *collector {
	t.Helper()
	requireRoot(t)
	if opts.Backend == "" {
		b, err := ParseBackend(*testBackend)
		must(t, "backend", err)
		opts.Backend = b
	}
	tr, err := newTracer(opts, hidden)
	if err != nil {
		t.Fatalf("start tracer: %+v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{tr: tr, cancel: cancel, done: make(chan error, 1)}
	go func() {
		c.done <- tr.Run(ctx, func(e *Event) {
			c.mu.Lock()
			c.events = append(c.events, *e)
			c.mu.Unlock()
		}, nil)
	}()
	t.Cleanup(func() { c.Stop(t) })
	return c
}

// Stop drains the ring buffer, detaches, and returns the final counters.
func (c *collector) Stop(t *testing.T) Stats {
	t.Helper()
	if c.tr == nil {
		return Stats{}
	}
	c.cancel()
	if err := <-c.done; err != nil {
		t.Errorf("tracer run: %v", err)
	}
	s, err := c.tr.Stats()
	if err != nil {
		t.Errorf("stats: %v", err)
	}
	c.tr.Close()
	c.tr = nil
	if s.Lost != 0 || s.Corrupt != 0 {
		t.Errorf("events lost %d, corrupt %d: tests must see every event", s.Lost, s.Corrupt)
	}
	if s.Missed != 0 {
		t.Logf("the kernel skipped %d hook runs (a program re-entered on one CPU)", s.Missed)
	}
	return s
}

func (c *collector) snapshot() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

// tryWait returns the events once cond holds for them, or what there is after timeout.
func (c *collector) tryWait(timeout time.Duration, cond func([]Event) bool) ([]Event, bool) {
	deadline := time.Now().Add(timeout)
	for {
		evs := c.snapshot()
		if cond(evs) {
			return evs, true
		}
		if time.Now().After(deadline) {
			return evs, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor returns the events once cond holds for them, failing after timeout.
func (c *collector) waitFor(t *testing.T, timeout time.Duration, what string, cond func([]Event) bool) []Event {
	t.Helper()
	evs, ok := c.tryWait(timeout, cond)
	if !ok {
		t.Fatalf("waited %s for %s; got %d events:\n%s", timeout, what, len(evs), dump(evs))
	}
	return evs
}

func dump(evs []Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s\n", e.String())
	}
	return b.String()
}

func (e Event) String() string {
	return fmt.Sprintf("%-11s %s:%d -> %s:%d %s->%s ns=%d pid=%d(%v) dur=%v(%v) sub=%s timeout=%v cause=%s detail=%q reason=%q unread=%d errno=%v(%v)",
		e.Kind, e.SAddr, e.SPort, e.DAddr, e.DPort, e.OldState, e.NewState, e.NetNS, e.PID, e.OwnerOK,
		e.Duration, e.DurationOK, e.Substate, e.Timeout, e.Cause, e.Detail, e.Reason, e.Unread, unixErrnoName(e.Errno), e.ErrnoOK)
}

func filter(evs []Event, keep func(*Event) bool) []Event {
	var out []Event
	for i := range evs {
		if keep(&evs[i]) {
			out = append(out, evs[i])
		}
	}
	return out
}

func ofKind(k Kind) func(*Event) bool { return func(e *Event) bool { return e.Kind == k } }

// transitions renders the state events as "OLD->NEW".
func transitions(evs []Event) []string {
	var out []string
	for _, e := range evs {
		if e.Kind == KindState {
			out = append(out, e.OldState.String()+"->"+e.NewState.String())
		}
	}
	return out
}

// clientSocket picks the events of the connecting socket from port sport to dport;
// connect() reports SYN_SENT before the kernel picks the local port.
func clientSocket(sport, dport uint16) func(*Event) bool {
	return func(e *Event) bool {
		return e.DPort == dport && (e.SPort == sport || (e.SPort == 0 && e.NewState == StateSynSent))
	}
}

// acceptedSocket picks the events of the server side of a connection; before 6.18
// LISTEN->SYN_RECV still carries the listener's tuple.
func acceptedSocket(port, peer uint16) func(*Event) bool {
	return func(e *Event) bool {
		return e.SPort == port && (e.DPort == peer || (e.DPort == 0 && e.OldState == StateListen && e.NewState == StateSynRecv))
	}
}

func unixErrnoName(e syscall.Errno) string {
	if e == 0 {
		return "-"
	}
	return unix.ErrnoName(e)
}
