package main

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
	"golang.org/x/sys/unix"
)

// slowSource is a snapshot that takes as long as the test wants.
type slowSource struct {
	entered chan struct{} // a reader is inside Take
	release chan struct{} // closed: Take returns
}

func newSlowSource() *slowSource {
	return &slowSource{entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (s *slowSource) Take(inode uint32) (*snapshot.Namespace, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return nil, errors.New("a slow snapshot, held by the test")
}

// The ring buffer reader is never blocked by a snapshot: while each reader of the window
// (timewait's view, doctor's report, serve's scrape) is held inside a slow snapshot, the
// tracer keeps decoding events and folding them into the window.
func TestReadersNeverBlockTheEventReader(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv("TWTRACE_UNIT_ONLY") != "" {
		t.Skip("needs root (and not make test-unit): loads eBPF programs and creates a network namespace")
	}
	ns := testnet.New(t)
	backend, err := tracer.ParseBackend(*testBackend)
	must(t, err)
	tr, err := tracer.New(tracer.Options{Backend: backend, CountTransitions: true, Filter: tracer.Filter{NetNS: ns.Inode}})
	must(t, err)
	defer tr.Close()
	win := window.New(time.Now(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	running := make(chan error, 1)
	go func() { running <- tr.Run(ctx, win.Add, nil) }()
	defer func() {
		cancel()
		must(t, <-running)
	}()
	lfd, port := ns.Listen(t, unix.AF_INET)
	defer unix.Close(lfd)

	readers := []struct {
		name string
		read func(src snapshotter)
	}{
		{"timewait", func(src snapshotter) { timewaitView(win, tr, src, nil, ns.Inode, 10, defaultTopWorkloads) }},
		{"doctor", func(src snapshotter) {
			m := &measurer{src: src, inodes: []uint32{ns.Inode}, win: win, peak: map[uint32]int64{}}
			m.report("test")
		}},
		{"serve", func(src snapshotter) {
			scrape := prometheus.NewRegistry()
			scrape.MustRegister(newScrapeCollector(tr, win, src, ns.Inode, 20))
			scrape.Gather()
		}},
	}
	const conns = 5
	for _, r := range readers {
		before := win.Copy().CreatedByNetns[ns.Inode]
		slow := newSlowSource()
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.read(slow)
		}()
		fail := func(format string, args ...any) {
			close(slow.release) // let the reader, and then the event reader, go before failing
			<-done
			t.Fatalf(r.name+": "+format, args...)
		}
		<-slow.entered // the reader is now inside its snapshot, for as long as the test likes
		start := stats(t, tr)
		for range conns {
			ns.ClientCloses(t, unix.AF_INET, lfd, port) // a timewait birth each: one record
		}
		// every record the kernel wrote meanwhile is decoded while the snapshot is held (an
		// emulated CPU may lose a hand-off now and then: the test counts what was written)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			s := stats(t, tr)
			if s.Emitted >= start.Emitted+2 && s.Decoded == s.Emitted {
				break
			}
			if time.Now().After(deadline) {
				fail("the reader decoded %d of the %d records written while a snapshot was held",
					s.Decoded-start.Decoded, s.Emitted-start.Emitted)
			}
		}
		copied := make(chan *window.Aggregate, 1)
		go func() { copied <- win.Copy() }()
		select {
		case a := <-copied:
			if n := a.CreatedByNetns[ns.Inode] - before; n < 2 {
				fail("the window holds %d new timewait births, want them folded in", n)
			}
		case <-time.After(5 * time.Second):
			fail("the window's lock is held during the snapshot")
		}
		close(slow.release)
		<-done
	}
}

func stats(t *testing.T, tr *tracer.Tracer) tracer.Stats {
	t.Helper()
	s, err := tr.Stats()
	must(t, err)
	return s
}
