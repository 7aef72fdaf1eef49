package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
	"golang.org/x/sys/unix"
)

// connectFrom connects a new socket of the namespace to dst and returns the errno
// connect() reported, 0 on success; non-blocking, it waits for the answer and reads
// SO_ERROR. The socket stays open until the test ends (its port stays taken).
func connectFrom(t *testing.T, ns *netns, dst netip.AddrPort, nonblock bool) syscall.Errno {
	t.Helper()
	family := unix.AF_INET
	if dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd := ns.SocketIn(t, family)
	t.Cleanup(func() { unix.Close(fd) })
	if nonblock {
		must(t, "O_NONBLOCK", unix.SetNonblock(fd, true))
	}
	err := unix.Connect(fd, sockaddr(dst.Addr(), dst.Port()))
	if nonblock && errors.Is(err, unix.EINPROGRESS) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		for {
			n, perr := unix.Poll(pfd, 30_000)
			if errors.Is(perr, unix.EINTR) {
				continue
			}
			must(t, "poll", perr)
			if n == 0 {
				t.Fatalf("connect to %s: no answer in 30 s", dst)
			}
			break
		}
		code, gerr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		must(t, "SO_ERROR", gerr)
		return syscall.Errno(code)
	}
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		t.Fatalf("connect to %s: %v", dst, err)
	}
	return errno
}

// connectFails picks the connect_fail events towards dst.
func connectFails(dst netip.AddrPort) func(*Event) bool {
	return func(e *Event) bool {
		return e.Kind == KindConnectFail && e.DAddr == dst.Addr() && e.DPort == dst.Port()
	}
}

// checkConnectFail asserts the one failure towards dst: its errno and its owner, the test.
func checkConnectFail(t *testing.T, evs []Event, dst netip.AddrPort, want syscall.Errno) Event {
	t.Helper()
	got := filter(evs, connectFails(dst))
	if len(got) != 1 {
		t.Fatalf("%d connect_fail towards %s, want 1:\n%s", len(got), dst, dump(evs))
	}
	e := got[0]
	if !e.ErrnoOK || e.Errno != want {
		t.Errorf("errno %s (known %v), want %s: %s", unixErrnoName(e.Errno), e.ErrnoOK, unix.ErrnoName(want), e)
	}
	if !e.OwnerOK || e.PID != uint32(os.Getpid()) {
		t.Errorf("owner %d (known %v), want the test, %d: %s", e.PID, e.OwnerOK, os.Getpid(), e)
	}
	if e.OldState != StateSynSent || e.NewState != StateClose || !e.DurationOK {
		t.Errorf("want SYN_SENT->CLOSE with the time spent connecting: %s", e)
	}
	return e
}

var connectModes = []struct {
	name     string
	nonblock bool
}{{"blocking", false}, {"nonblocking", true}}

// A closed port answers the SYN with a reset: ECONNREFUSED, owned by the caller.
func TestConnectFailRefused(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		for _, mode := range connectModes {
			t.Run(familyName(family)+"/"+mode.name, func(t *testing.T) {
				t.Parallel()
				ns := newNetns(t)
				c := startTracer(t, Options{Families: FamilyConnect, Filter: Filter{NetNS: ns.inode}})
				lfd, port := listenIn(t, ns, family)
				unix.Close(lfd) // a port nobody listens on
				dst := netip.AddrPortFrom(loopbackAddr(family), port)
				if errno := connectFrom(t, ns, dst, mode.nonblock); errno != unix.ECONNREFUSED {
					t.Fatalf("connect() = %v, want ECONNREFUSED", errno)
				}
				evs := c.waitFor(t, 5*time.Second, "connect_fail", func(evs []Event) bool {
					return len(filter(evs, connectFails(dst))) > 0
				})
				e := checkConnectFail(t, evs, dst, unix.ECONNREFUSED)
				if e.SAddr != loopbackAddr(family) || e.SPort == 0 {
					t.Errorf("want the local address and port the SYN left from: %s", e)
				}
			})
		}
	}
}

// routed is a client namespace joined by a veth pair to a router namespace, which routes
// to addresses owned by a third namespace: one unreachable (answered with ICMP host
// unreachable), one unrouted (ICMP net unreachable), one blackholed (silence). No packet
// leaves the three namespaces.
type routed struct {
	client                         *netns
	unreachable, unrouted, dropped netip.Addr
}

func newRouted(t *testing.T, v6 bool) *routed {
	t.Helper()
	client, router, owner := newNetns(t), newNetns(t), newNetns(t)
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	clientAddr, routerAddr, remotes, remote := p("10.88.0.1/24"), p("10.88.0.2/24"), p("10.88.1.0/24"), "10.88.1.%d/32"
	if v6 {
		clientAddr, routerAddr, remotes, remote = p("fd88::1/64"), p("fd88::2/64"), p("fd88:1::/64"), "fd88:1::%d/128"
		client.Sysctl(t, "net/ipv6/conf/default/accept_dad", "0")
		router.Sysctl(t, "net/ipv6/conf/default/accept_dad", "0")
	}
	r := &routed{client: client}
	dsts := make([]netip.Prefix, 3)
	for i := range dsts {
		dsts[i] = p(fmt.Sprintf(remote, i+1))
	}
	r.unreachable, r.unrouted, r.dropped = dsts[0].Addr(), dsts[1].Addr(), dsts[2].Addr()
	var err error
	do := func(ns *netns, f func() error) {
		if err == nil {
			ns.Do(func() { err = f() })
		}
	}
	do(owner, func() error {
		for _, d := range dsts {
			if err := testnet.AddAddr("lo", d); err != nil {
				return err
			}
		}
		return nil
	})
	do(client, func() error { return testnet.AddVeth("twc", "twr", router.fd) })
	do(client, func() error { return testnet.AddAddr("twc", clientAddr) })
	do(router, func() error { return testnet.AddAddr("twr", routerAddr) })
	do(client, func() error { return testnet.AddRoute(remotes, testnet.RouteVia, routerAddr.Addr()) })
	do(router, func() error { return testnet.AddRoute(dsts[0], testnet.RouteUnreachable, netip.Addr{}) })
	do(router, func() error { return testnet.AddRoute(dsts[2], testnet.RouteBlackhole, netip.Addr{}) })
	if err != nil {
		t.Fatalf("build the routed namespaces: %v", err)
	}
	if v6 {
		router.Sysctl(t, "net/ipv6/conf/all/forwarding", "1")
		router.Sysctl(t, "net/ipv6/icmp/ratelimit", "0")
	} else {
		router.Sysctl(t, "net/ipv4/ip_forward", "1")
		router.Sysctl(t, "net/ipv4/icmp_ratelimit", "0")
	}
	client.Sysctl(t, "net/ipv4/tcp_syn_retries", "1") // IPv6 too: ETIMEDOUT after 1 + 2 s
	return r
}

// A router answering the SYN with an ICMP error fails the connect in softirq, or at the
// retransmission when the ICMP met the socket locked by connect() (sk_err_soft): in both
// the errno is the ICMP's and the owner the caller. IPv6 routers answer an unreachable
// route with "no route" (ENETUNREACH); IPv4 ones with host (EHOSTUNREACH) or net
// unreachable (ENETUNREACH) for a destination they have no route to.
func TestConnectFailUnreachable(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, v6 := range []bool{false, true} {
		for _, mode := range connectModes {
			name := map[bool]string{false: "ipv4", true: "ipv6"}[v6] + "/" + mode.name
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				r := newRouted(t, v6)
				c := startTracer(t, Options{Families: FamilyConnect, Filter: Filter{NetNS: r.client.inode}})
				cases := []struct {
					dst  netip.Addr
					want syscall.Errno
				}{{r.unreachable, unix.EHOSTUNREACH}, {r.unrouted, unix.ENETUNREACH}}
				if v6 {
					cases[0].want = unix.ENETUNREACH
				}
				for _, tc := range cases {
					dst := netip.AddrPortFrom(tc.dst, 80)
					if errno := connectFrom(t, r.client, dst, mode.nonblock); errno != tc.want {
						t.Fatalf("connect() to %s = %v, want %v", dst, errno, tc.want)
					}
					evs := c.waitFor(t, 5*time.Second, "connect_fail to "+dst.String(), func(evs []Event) bool {
						return len(filter(evs, connectFails(dst))) > 0
					})
					e := checkConnectFail(t, evs, dst, tc.want)
					t.Logf("%s: %s after %v in SYN_SENT", dst, unix.ErrnoName(tc.want), e.Duration)
				}
			})
		}
	}
}

// SYNs dropped on the way: after tcp_syn_retries the timer gives up (ETIMEDOUT), in
// softirq where the current task is a bystander; the owner is still the caller.
func TestConnectFailTimedOut(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, v6 := range []bool{false, true} {
		for _, mode := range connectModes {
			name := map[bool]string{false: "ipv4", true: "ipv6"}[v6] + "/" + mode.name
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				r := newRouted(t, v6)
				c := startTracer(t, Options{Families: FamilyConnect, Filter: Filter{NetNS: r.client.inode}})
				dst := netip.AddrPortFrom(r.dropped, 80)
				start := time.Now()
				if errno := connectFrom(t, r.client, dst, mode.nonblock); errno != unix.ETIMEDOUT {
					t.Fatalf("connect() to %s = %v, want ETIMEDOUT", dst, errno)
				}
				took := time.Since(start)
				evs := c.waitFor(t, 5*time.Second, "connect_fail", func(evs []Event) bool {
					return len(filter(evs, connectFails(dst))) > 0
				})
				e := checkConnectFail(t, evs, dst, unix.ETIMEDOUT)
				// one retry: the SYN at 0 s, again at 1 s, given up at 3 s
				if e.Duration < 2900*time.Millisecond || e.Duration > took+100*time.Millisecond {
					t.Errorf("spent %v in SYN_SENT, want about 3 s and at most the %v connect() took: %s", e.Duration, took, e)
				}
			})
		}
	}
}
