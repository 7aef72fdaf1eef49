package tracer

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// exhaustionPorts is the namespace's whole ip_local_port_range in the exhaustion tests.
const exhaustionPorts = 10

// exhaust fills a 10-port range with the client's TIME_WAIT sockets towards one listener
// (tcp_tw_reuse off, loopback included), then connects tries more times, each failing
// with EADDRNOTAVAIL; it returns the destination and the failures it counted itself.
func exhaust(t *testing.T, ns *netns, family int, tries int) (netip.AddrPort, int) {
	t.Helper()
	ns.Sysctl(t, "net/ipv4/ip_local_port_range", "40000 40009")
	ns.Sysctl(t, "net/ipv4/tcp_tw_reuse", "0")
	lfd := ns.SocketIn(t, family)
	t.Cleanup(func() { unix.Close(lfd) })
	const port = 5000 // outside the range: the listener takes none of the 10 ports
	must(t, "bind", unix.Bind(lfd, sockaddr(loopbackAddr(family), port)))
	must(t, "listen", unix.Listen(lfd, 128))
	for i := 0; i < exhaustionPorts; i++ {
		clientCloses(t, ns, family, lfd, port)
	}
	if n := ns.TimeWaitCount(t); n != exhaustionPorts {
		t.Fatalf("%d sockets in TIME_WAIT, want the range's %d", n, exhaustionPorts)
	}
	dst := netip.AddrPortFrom(loopbackAddr(family), port)
	failed := 0
	for i := 0; i < tries; i++ {
		fd := ns.SocketIn(t, family)
		err := unix.Connect(fd, sockaddr(dst.Addr(), dst.Port()))
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.EADDRNOTAVAIL):
			failed++
		case err != nil:
			t.Fatalf("connect %d: %v, want EADDRNOTAVAIL", i, err)
		default:
			t.Fatalf("connect %d succeeded with every port of the range in TIME_WAIT", i)
		}
	}
	return dst, failed
}

// With every local port towards a destination held by a TIME_WAIT socket, connect()
// fails with EADDRNOTAVAIL: one event per failed call, with the caller, the destination
// and the local address tried, and no port.
func TestConnectFailPortsExhausted(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		t.Run(familyName(family), func(t *testing.T) {
			t.Parallel()
			ns := newNetns(t)
			c := startTracer(t, Options{Families: FamilyConnect | FamilyTW, Filter: Filter{NetNS: ns.inode}})
			dst, failed := exhaust(t, ns, family, 7)
			evs := c.waitFor(t, 5*time.Second, "7 connect_fail", func(evs []Event) bool {
				return len(filter(evs, connectFails(dst))) >= failed
			})
			time.Sleep(200 * time.Millisecond) // would-be extra events, reported late, must be caught
			evs = c.snapshot()
			fails := filter(evs, connectFails(dst))
			if len(fails) != failed {
				t.Fatalf("%d connect_fail towards %s, the test counted %d failed connect() calls:\n%s", len(fails), dst, failed, dump(evs))
			}
			for _, e := range fails {
				if !e.ErrnoOK || e.Errno != unix.EADDRNOTAVAIL || !e.OwnerOK || e.PID != uint32(os.Getpid()) ||
					e.SAddr != dst.Addr() || e.SPort != 0 || e.OldState != StateSynSent || e.NewState != StateClose {
					t.Errorf("want EADDRNOTAVAIL from %s, port 0, owned by the test (%d): %s", dst.Addr(), os.Getpid(), e)
				}
			}
			if others := len(filter(evs, ofKind(KindConnectFail))) - len(fails); others != 0 {
				t.Errorf("%d connect_fail elsewhere:\n%s", others, dump(evs))
			}
		})
	}
}

// A port bound by hand that a TIME_WAIT socket holds towards the destination fails the
// same way, reporting the port that was tried.
func TestConnectFailBoundPortTaken(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	ns.Sysctl(t, "net/ipv4/tcp_timestamps", "0") // else a bound port takes the timewait socket over
	c := startTracer(t, Options{Families: FamilyConnect, Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd)
	cport := clientCloses(t, ns, unix.AF_INET, lfd, port)
	fd := ns.SocketIn(t, unix.AF_INET)
	defer unix.Close(fd)
	must(t, "SO_REUSEADDR", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
	must(t, "bind", unix.Bind(fd, sockaddr(loopbackAddr(unix.AF_INET), cport)))
	dst := netip.AddrPortFrom(loopbackAddr(unix.AF_INET), port)
	if err := unix.Connect(fd, sockaddr(dst.Addr(), dst.Port())); !errors.Is(err, unix.EADDRNOTAVAIL) {
		t.Fatalf("connect from the port in TIME_WAIT: %v, want EADDRNOTAVAIL", err)
	}
	evs := c.waitFor(t, 5*time.Second, "connect_fail", func(evs []Event) bool {
		return len(filter(evs, connectFails(dst))) > 0
	})
	if e := checkConnectFail(t, evs, dst, unix.EADDRNOTAVAIL); e.SPort != cport {
		t.Errorf("port %d, want the one bound, %d: %s", e.SPort, cport, e)
	}
}

// Then tcp_tw_reuse=1 with timestamps lets connect() take the timewait sockets over: the
// failures stop and each takeover is a timewait death by reuse, as many as the kernel
// counts (TcpExtTWRecycled).
func TestConnectReuseStopsExhaustion(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	c := startTracer(t, Options{Families: FamilyConnect | FamilyTW, Filter: Filter{NetNS: ns.inode}})
	dst, failed := exhaust(t, ns, unix.AF_INET, 3)
	c.waitFor(t, 5*time.Second, "3 connect_fail", func(evs []Event) bool {
		return len(filter(evs, connectFails(dst))) == failed
	})
	recycled := ns.Netstat(t, "TWRecycled")
	ns.Sysctl(t, "net/ipv4/tcp_timestamps", "1")
	ns.Sysctl(t, "net/ipv4/tcp_tw_reuse", "1")
	delay := 1100 * time.Millisecond // before tcp_tw_reuse_delay: reuse after a full second
	if ns.HasSysctl("net/ipv4/tcp_tw_reuse_delay") {
		ns.Sysctl(t, "net/ipv4/tcp_tw_reuse_delay", "1")
		delay = 10 * time.Millisecond
	}
	time.Sleep(delay) // the kernel's reuse rule, not a wait for events
	for i := 0; i < exhaustionPorts; i++ {
		if errno := connectFrom(t, ns, dst, false); errno != 0 {
			t.Fatalf("connect %d with tcp_tw_reuse=1: %v", i, errno)
		}
	}
	reused := ns.Netstat(t, "TWRecycled") - recycled
	if reused != exhaustionPorts {
		t.Errorf("the kernel counted %d timewait sockets taken over, want %d", reused, exhaustionPorts)
	}
	isReuse := func(e *Event) bool {
		return e.Kind == KindTWExit && e.Cause == CauseKilled && e.Detail == DetailReuse && e.DAddr == dst.Addr() && e.DPort == dst.Port()
	}
	evs := c.waitFor(t, 5*time.Second, "10 reuses", func(evs []Event) bool {
		return uint64(len(filter(evs, isReuse))) >= reused
	})
	time.Sleep(200 * time.Millisecond)
	evs = c.snapshot()
	if got := len(filter(evs, isReuse)); uint64(got) != reused {
		t.Errorf("%d timewait deaths by reuse, the kernel counted %d:\n%s", got, reused, dump(evs))
	}
	if got := len(filter(evs, connectFails(dst))); got != failed {
		t.Errorf("%d connect_fail, want only the %d before tcp_tw_reuse:\n%s", got, failed, dump(evs))
	}
}

// The bind-time variants: a socket bound to an address with IP_BIND_ADDRESS_NO_PORT gets
// its port at connect(), whose failure is an EADDRNOTAVAIL event from that address; a
// bind() to port 0 without it looks for a port there and fails in bind() with EADDRINUSE,
// no connect() ever made: no event.
func TestConnectFailBindTime(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	c := startTracer(t, Options{Families: FamilyConnect, Filter: Filter{NetNS: ns.inode}})
	dst, failed := exhaust(t, ns, unix.AF_INET, 1)
	local := sockaddr(loopbackAddr(unix.AF_INET), 0)

	noPort := ns.SocketIn(t, unix.AF_INET)
	defer unix.Close(noPort)
	must(t, "IP_BIND_ADDRESS_NO_PORT", unix.SetsockoptInt(noPort, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1))
	must(t, "bind with IP_BIND_ADDRESS_NO_PORT", unix.Bind(noPort, local))
	if err := unix.Connect(noPort, sockaddr(dst.Addr(), dst.Port())); !errors.Is(err, unix.EADDRNOTAVAIL) {
		t.Fatalf("connect of a socket bound with IP_BIND_ADDRESS_NO_PORT: %v, want EADDRNOTAVAIL", err)
	}
	failed++

	bound := ns.SocketIn(t, unix.AF_INET)
	defer unix.Close(bound)
	if err := unix.Bind(bound, local); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("bind to port 0 with every port in TIME_WAIT: %v, want EADDRINUSE", err)
	}

	evs := c.waitFor(t, 5*time.Second, "connect_fail", func(evs []Event) bool {
		return len(filter(evs, connectFails(dst))) >= failed
	})
	time.Sleep(200 * time.Millisecond) // an event for the failed bind() would be in flight
	evs = c.snapshot()
	if got := filter(evs, ofKind(KindConnectFail)); len(got) != failed {
		t.Fatalf("%d connect_fail, want %d (none for the bind()):\n%s", len(got), failed, dump(evs))
	}
	last := filter(evs, connectFails(dst))[failed-1]
	if last.Errno != unix.EADDRNOTAVAIL || last.SAddr != dst.Addr() || last.SPort != 0 || last.PID != uint32(os.Getpid()) {
		t.Errorf("want EADDRNOTAVAIL from the bound address, no port, owned by the test: %s", last)
	}
}
