package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/cgroup2"
	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// lockedBuffer is the stream's output, read while the printer writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSuffix(l.b.String(), "\n"), "\n")
}

// namesWithSlowLookup names cgroups under a directory tree whose next lookup (of the cgroup
// id it returns, not looked up yet) closes looking and waits for release.
func namesWithSlowLookup(t *testing.T) (names *workloads, id uint64, looking, release chan struct{}) {
	h := cgroup2.Hierarchy{Mount: t.TempDir(), Root: "/"}
	looking, release = make(chan struct{}), make(chan struct{})
	names = &workloads{cgroups: true, names: workload.New(workload.Options{Hierarchy: &h, MinRefresh: time.Hour,
		Sleep: func(time.Duration) { close(looking); <-release }})}
	names.cgroup(1 << 40) // a walk now: the next one waits out MinRefresh in Sleep, until released
	dir, _ := h.Dir("/system.slice/nginx.service")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, id, err := h.Lookup("/system.slice/nginx.service")
	if err != nil {
		t.Fatal(err)
	}
	return names, id, looking, release
}

func stateEvent(port uint16, cgroup uint64) *tracer.Event {
	return &tracer.Event{Kind: tracer.KindState, Family: 4, SPort: port, Cgroup: cgroup,
		OldState: tracer.StateEstablished, NewState: tracer.StateFinWait1}
}

// An event whose cgroup must be looked up waits, and the events after it wait behind it
// whatever their names: the stream keeps the order it was read in; what is named already
// is printed (and flushed) at once, with no goroutine between the reader and the output;
// a flush asked for while events wait happens once they are printed.
func TestPrinterKeepsOrderBehindALookup(t *testing.T) {
	names, nginx, looking, release := namesWithSlowLookup(t)
	var out lockedBuffer
	p := newPrinter(&out, true, names)
	p.event(stateEvent(1, 0))
	p.flush()
	if l := out.lines(); len(l) != 1 || !strings.Contains(l[0], `"sport":1,`) {
		t.Fatalf("an event with nothing to look up was not printed and flushed at once: %q", l)
	}
	p.event(stateEvent(2, nginx))
	<-looking
	p.event(stateEvent(3, 0))
	p.flush()
	if l := out.lines(); len(l) != 1 {
		t.Fatalf("printed while the first event's cgroup was being looked up: %q", l)
	}
	close(release)
	p.stop()
	l := out.lines()
	if len(l) != 3 || !strings.Contains(l[1], `"sport":2,`) || !strings.Contains(l[1], `nginx.service`) ||
		!strings.Contains(l[2], `"sport":3,`) {
		t.Fatalf("want the events in the order read, the second named, flushed: %q", l)
	}

	var again lockedBuffer
	q := newPrinter(&again, true, names)
	defer q.stop()
	q.event(stateEvent(4, nginx))
	q.flush()
	if l := again.lines(); len(l) != 1 || !strings.Contains(l[0], `nginx.service`) {
		t.Fatalf("an event of a cgroup named already was not printed at once: %q", l)
	}
}

// Behind a slow lookup, at most maxWaiting events wait and then the reader does (as it
// waited on main's channel), and every event comes out in order.
func TestPrinterBoundsWhatWaits(t *testing.T) {
	names, nginx, looking, release := namesWithSlowLookup(t)
	var out lockedBuffer
	p := newPrinter(&out, true, names)
	p.event(stateEvent(1, nginx))
	<-looking
	const behind = 3 * maxWaiting
	pushed := make(chan struct{})
	go func() {
		defer close(pushed)
		for i := range behind {
			p.event(stateEvent(uint16(2+i), 0))
		}
	}()
	for full := false; !full; runtime.Gosched() {
		p.mu.Lock()
		full = len(p.waiting)-p.next >= maxWaiting
		p.mu.Unlock()
	}
	close(release)
	<-pushed
	p.stop()
	p.flush() // as watch does once stopped
	if c := cap(p.waiting); c > 2*maxWaiting {
		t.Errorf("%d events held behind a lookup, want at most %d", c, maxWaiting)
	}
	l := out.lines()
	if len(l) != 1+behind {
		t.Fatalf("want %d lines, got %d", 1+behind, len(l))
	}
	for i, line := range l {
		if want := fmt.Sprintf(`"sport":%d,`, 1+i); !strings.Contains(line, want) {
			t.Fatalf("line %d: want %s, got %s", i, want, line)
		}
	}
}
