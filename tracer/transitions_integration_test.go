package tracer

import (
	"maps"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Counted transitions are the streamed ones, exactly: the kernel's counts plus the
// hand-offs read from timewait records, and no state event reaches the reader.
func TestCountedTransitions(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	const conns = 20
	c := startTracer(t, Options{Families: FamilyState | FamilyTW, CountTransitions: true, Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	for range conns {
		clientCloses(t, ns, unix.AF_INET, lfd, port)
	}
	unix.Close(lfd)

	want := map[Transition]uint64{
		{StateClose, StateListen}: 1, {StateListen, StateClose}: 1,
		// the clients
		{StateClose, StateSynSent}: conns, {StateSynSent, StateEstablished}: conns,
		{StateEstablished, StateFinWait1}: conns, {StateFinWait1, StateFinWait2}: conns,
		{StateFinWait2, StateTimeWait}: conns,
		// the accepted sockets
		{StateListen, StateSynRecv}: conns, {StateSynRecv, StateEstablished}: conns,
		{StateEstablished, StateCloseWait}: conns, {StateCloseWait, StateLastAck}: conns,
		{StateLastAck, StateClose}: conns,
	}
	var got map[Transition]uint64
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if got, err = c.tr.Transitions(); err != nil {
			t.Fatal(err)
		}
		if maps.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !maps.Equal(got, want) {
		if s, _ := c.tr.Stats(); s.Missed > 0 {
			t.Skipf("the kernel skipped %d hook runs, so counts may be short: got %v", s.Missed, got)
		}
		t.Errorf("transitions:\n got %v\nwant %v", got, want)
	}
	if states := filter(c.snapshot(), ofKind(KindState)); len(states) != 0 {
		t.Errorf("%d state events delivered while counting: %s", len(states), dump(states))
	}
	if tws := filter(c.snapshot(), ofKind(KindTWEnter)); len(tws) != conns {
		t.Errorf("%d tw_enter events, want %d", len(tws), conns)
	}
}
