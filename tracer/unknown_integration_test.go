package tracer

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Unknown lifetimes and unknown times in the old state are counted only for what the
// filters keep: deaths in another namespace, or transitions of sockets on other ports,
// are not what the user asked about, however little is known of them.
func TestUnknownsCountOnlyWhatIsTraced(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	traced, other := newNetns(t), newNetns(t)

	// In the other namespace, timewait sockets born before tracing starts, killed while it
	// runs (the namespace is destroyed): unknown lifetimes there.
	olfd, oport := listenIn(t, other, unix.AF_INET)
	const n = 4
	for i := 0; i < n; i++ {
		clientCloses(t, other, unix.AF_INET, olfd, oport)
	}
	unix.Close(olfd)
	// In the traced namespace, a connection on a port the filter leaves out, opened before
	// tracing starts and closed while it runs: unknown times in the old state there.
	lfd, port := listenIn(t, traced, unix.AF_INET)
	defer unix.Close(lfd)
	flfd, fport := listenIn(t, traced, unix.AF_INET)
	defer unix.Close(flfd)
	xfd, _ := connectIn(t, traced, unix.AF_INET, port, 0)
	xafd := acceptOn(t, lfd)

	c := startTracer(t, Options{Filter: Filter{NetNS: traced.inode, Port: fport}})
	control := startTracer(t, Options{Filter: Filter{NetNS: other.inode}})
	unix.Close(xfd)
	readEOF(t, xafd)
	unix.Close(xafd)
	other.Destroy()
	control.waitFor(t, 20*time.Second, "the other namespace's timewait deaths", func(evs []Event) bool {
		return len(filter(evs, ofKind(KindTWExit))) == n
	})
	if s := control.Stop(t); s.TWUnknownBirth != n {
		t.Errorf("the tracer of the other namespace counted %d unknown lifetimes, want its %d", s.TWUnknownBirth, n)
	}
	s := c.Stop(t)
	if s.TWUnknownBirth != 0 || s.SockUntracked != 0 {
		t.Errorf("the tracer of namespace %d, port %d counted %d unknown lifetimes and %d unknown in_old, want 0 and 0",
			traced.inode, fport, s.TWUnknownBirth, s.SockUntracked)
	}
}
