package tracer

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

func resetsOf(sport, dport uint16) func(*Event) bool {
	return func(e *Event) bool { return e.Kind == KindReset && e.SPort == sport && e.DPort == dport }
}

func kernelHasResetReasons(t *testing.T) bool {
	spec, err := btf.LoadKernelSpec()
	must(t, "kernel BTF", err)
	var e *btf.Enum
	return spec.TypeByName("sk_rst_reason", &e) == nil
}

// closeAbortively sets up one connection, has the client send payload, and lets
// abort close the server's socket.
func closeAbortively(t *testing.T, ns *netns, payload []byte, abort func(fd int)) (c *collector, port, cport uint16) {
	t.Helper()
	c = startTracer(t, Options{Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	t.Cleanup(func() { unix.Close(lfd) })
	cfd, cport := connectIn(t, ns, unix.AF_INET, port, 0)
	t.Cleanup(func() { unix.Close(cfd) })
	afd := acceptOn(t, lfd)
	if len(payload) > 0 {
		_, err := unix.Write(cfd, payload)
		must(t, "write", err)
		waitReadable(t, afd)
	}
	abort(afd)
	return c, port, cport
}

func checkReset(t *testing.T, c *collector, port, cport uint16, reason string, unread uint32) []Event {
	t.Helper()
	evs := c.waitFor(t, 5*time.Second, "sent and received reset", func(evs []Event) bool {
		return len(filter(evs, resetsOf(port, cport))) == 1 && len(filter(evs, resetsOf(cport, port))) == 1
	})
	sent, recv := filter(evs, resetsOf(port, cport))[0], filter(evs, resetsOf(cport, port))[0]
	if sent.Recv || sent.Reason != reason || !sent.UnreadOK || sent.Unread != unread || sent.OldState != StateClose {
		t.Errorf("sent reset: want reason %s, %d unread bytes, in CLOSE: %s", reason, unread, sent)
	}
	if !sent.OwnerOK || sent.PID != uint32(os.Getpid()) {
		t.Errorf("sent reset must name the server's pid %d: %s", os.Getpid(), sent)
	}
	if sent.ReasonKernel != kernelHasResetReasons(t) {
		t.Errorf("reason_source kernel=%v on a kernel with reasons=%v", sent.ReasonKernel, !sent.ReasonKernel)
	}
	if !recv.Recv || recv.OldState != StateEstablished || recv.Reason != "" {
		t.Errorf("client should receive the reset in ESTABLISHED: %s", recv)
	}
	if slices.Contains(transitions(filter(evs, clientSocket(cport, port))), "FIN_WAIT2->TIME_WAIT") {
		t.Errorf("a reset connection must not reach TIME_WAIT")
	}
	return evs
}

// close() with unread data sends RST instead of FIN (tcp_close's data_was_unread).
func TestResetCloseWithUnreadData(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	before := ns.Netstat(t, "TCPAbortOnClose")
	c, port, cport := closeAbortively(t, ns, []byte("0123456789"), func(afd int) { unix.Close(afd) })
	checkReset(t, c, port, cport, "tcp_abort_on_close", 10)
	if d := ns.Netstat(t, "TCPAbortOnClose") - before; d != 1 {
		t.Errorf("kernel's TCPAbortOnClose went up by %d, want 1", d)
	}
}

// SO_LINGER {1, 0} makes close() abort on purpose.
func TestResetZeroLinger(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	c, port, cport := closeAbortively(t, ns, nil, func(afd int) {
		must(t, "SO_LINGER", unix.SetsockoptLinger(afd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}))
		unix.Close(afd)
	})
	checkReset(t, c, port, cport, "tcp_state", 0)
}

// A SYN to a closed port is answered with a reset that has no socket: kernels from
// 6.10 trace it, older ones do not.
func TestResetNoSocket(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	c := startTracer(t, Options{Families: FamilyReset, Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	unix.Close(lfd) // now nothing listens on port
	fd := ns.SocketIn(t, unix.AF_INET)
	defer unix.Close(fd)
	if err := unix.Connect(fd, sockaddr(loopbackAddr(unix.AF_INET), port)); err != unix.ECONNREFUSED {
		t.Fatalf("connect to a closed port: %v, want ECONNREFUSED", err)
	}
	if !kernelHasResetReasons(t) {
		s := c.Stop(t)
		if n := len(filter(c.snapshot(), func(e *Event) bool { return e.NoSocket })); n != 0 || s.Corrupt != 0 {
			t.Errorf("this kernel does not trace socketless resets, yet %d were reported", n)
		}
		t.Log("kernel without sk_rst_reason: socketless resets are not visible (documented)")
		return
	}
	evs := c.waitFor(t, 5*time.Second, "socketless reset", func(evs []Event) bool {
		return slices.ContainsFunc(evs, func(e Event) bool { return e.NoSocket })
	})
	e := filter(evs, func(e *Event) bool { return e.NoSocket })[0]
	if e.SPort != port || e.Reason != "no_socket" || e.OwnerOK || e.NetNS != ns.inode {
		t.Errorf("want a reset from port %d, reason no_socket, no owner: %s", port, e)
	}
}

// waitReadable blocks until the peer's data is queued on fd.
func waitReadable(t *testing.T, fd int) {
	t.Helper()
	for {
		n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		must(t, "SIOCINQ", err)
		if n > 0 {
			return
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		_, err = unix.Poll(fds, 1000)
		must(t, "poll", err)
	}
}
