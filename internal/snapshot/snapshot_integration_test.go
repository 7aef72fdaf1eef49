package snapshot

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/netns"
	"github.com/twtrace/twtrace/internal/testnet"
	"golang.org/x/sys/unix"
)

// One snapshot: counts exact for the sockets the test made, TIME_WAIT per destination,
// the limits and the counters; it agrees with ss where ss exists.
func TestTakeMatchesKernel(t *testing.T) {
	requireRoot(t) // not parallel: it counts the process's sock_diag dumps
	ns := testnet.New(t)
	ns.Sysctl(t, "net/ipv4/tcp_max_tw_buckets", "1234")
	ns.Sysctl(t, "net/ipv4/ip_local_port_range", "40000 40999")
	lfd, port := ns.Listen(t, unix.AF_INET)
	defer unix.Close(lfd)
	// both listeners take a port from the range; IPv6 may draw the IPv4 one's number (a
	// port is per family), which one port counted and the port filter would see: draw again
	l6, port6 := ns.Listen(t, unix.AF_INET6)
	for port6 == port {
		unix.Close(l6)
		l6, port6 = ns.Listen(t, unix.AF_INET6)
	}
	defer unix.Close(l6)
	for range 5 {
		ns.ClientCloses(t, unix.AF_INET, lfd, port) // 5 clients in TIME_WAIT
	}
	for range 3 { // 3 established pairs
		defer unix.Close(ns.Connect(t, unix.AF_INET, port))
		defer unix.Close(testnet.Accept(t, lfd))
	}
	target := netns.Netns{Inode: ns.Inode, Path: ns.Path()}
	before := dumps.Load()
	n, err := Take(target, Options{TimeWaitSockets: true})
	must(t, "take", err)
	if d := dumps.Load() - before; d != 2 {
		t.Errorf("%d sock_diag dumps, want one per address family", d)
	}
	want := map[int]uint64{unix.BPF_TCP_LISTEN: 2, unix.BPF_TCP_ESTABLISHED: 6, unix.BPF_TCP_TIME_WAIT: 5}
	for s := range n.ByState {
		if n.ByState[s] != want[s] {
			t.Errorf("state %d: %d sockets, want %d", s, n.ByState[s], want[s])
		}
	}
	if n.Total != 13 || n.NetNS != ns.Inode || n.TimeWaitTable != 5 {
		t.Errorf("total %d netns %d timewait table %d, want 13 %d 5", n.Total, n.NetNS, n.TimeWaitTable, ns.Inode)
	}
	if n.Limits != (Limits{MaxTWBuckets: 1234, PortLow: 40000, PortHigh: 40999}) || n.Limits.PortRangeSize() != 1000 {
		t.Errorf("limits %+v", n.Limits)
	}
	if n.Sysctls["tcp_max_tw_buckets"] != "1234" || n.Sysctls["ip_local_port_range"] != "40000 40999" {
		t.Errorf("sysctls %v", n.Sysctls)
	}
	if _, ok := n.Counters["TcpExtTCPTimeWaitOverflow"]; !ok || n.Counters["TcpActiveOpens"] != 8 {
		t.Errorf("counters: TcpExtTCPTimeWaitOverflow present %v, TcpActiveOpens %d (want 8)", ok, n.Counters["TcpActiveOpens"])
	}
	// the two listeners got ports from the range too; then 5 timewait and 3 established clients
	if n.EphemeralPorts != 10 {
		t.Errorf("%d ephemeral ports in use, want 10", n.EphemeralPorts)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	dest := Destination{NetNS: ns.Inode, SAddr: lo, DAddr: lo, DPort: port}
	if len(n.TimeWait) != 1 || n.TimeWait[dest] != 5 {
		t.Errorf("TIME_WAIT per destination %v, want %v: 5", n.TimeWait, dest)
	}
	if len(n.TimeWaitSockets) != 5 {
		t.Fatalf("%d timewait sockets listed, want 5", len(n.TimeWaitSockets))
	}
	for _, s := range n.TimeWaitSockets {
		if s.Family != 4 || s.State != unix.BPF_TCP_TIME_WAIT || s.DPort != port || s.SPort < 40000 || s.SPort > 40999 ||
			s.Timer <= 0 || s.Timer > 60e9 {
			t.Errorf("timewait socket %+v", s)
		}
	}

	// the filters apply to what is counted, and never to the timewait table
	for _, fc := range []struct {
		name string
		keep func(*Socket) bool
		want uint64
	}{
		{"port", func(s *Socket) bool { return s.SPort == port || s.DPort == port }, 12},
		{"ipv6", func(s *Socket) bool { return s.Family == 6 }, 1},
		{"dport", func(s *Socket) bool { return s.DPort == port }, 8},
		{"none", func(s *Socket) bool { return false }, 0},
	} {
		got, err := Take(target, Options{Keep: fc.keep})
		must(t, "take", err)
		if got.Total != fc.want || got.TimeWaitTable != 5 {
			t.Errorf("filter %s: %d sockets (table %d), want %d (table 5)", fc.name, got.Total, got.TimeWaitTable, fc.want)
		}
		if fc.name == "ipv6" && len(got.TimeWait) != 0 {
			t.Errorf("filter ipv6 kept IPv4 destinations: %v", got.TimeWait)
		}
	}
	if ss, err := exec.LookPath("ss"); err == nil {
		var out []byte
		ns.Do(func() { out, err = exec.Command(ss, "-Htan").Output() })
		must(t, "ss", err)
		if c := len(strings.Split(strings.TrimSpace(string(out)), "\n")); uint64(c) != n.Total {
			t.Errorf("ss lists %d sockets, the snapshot %d:\n%s", c, n.Total, out)
		}
	}
}

// A source finds a namespace by inode with one /proc walk, then never walks again for it;
// a namespace it cannot find is not looked for at every call either.
func TestSourceWalksOnlyOnAMiss(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := testnet.New(t)
	release := ns.HoldSockets(t, 0) // a process in the namespace names it in /proc
	defer release()
	src := NewSource(Options{})
	for range 3 {
		n, err := src.Take(ns.Inode)
		must(t, "take", err)
		if n.NetNS != ns.Inode {
			t.Fatalf("took netns %d, want %d", n.NetNS, ns.Inode)
		}
	}
	if w := src.Index().Walks(); w != 1 {
		t.Errorf("%d /proc walks for three snapshots of one namespace, want 1", w)
	}
	const gone = 1 // no namespace has inode 1
	for range 3 {
		if _, err := src.Take(gone); err == nil {
			t.Fatal("took a namespace that does not exist")
		}
	}
	if w := src.Index().Walks(); w != 2 {
		t.Errorf("%d /proc walks after asking three times for a missing namespace, want 2", w)
	}
}

// A timewait socket orphaned before the peer's FIN reports its substate, FIN_WAIT2, and
// the timewait timer: it is in the timewait table and listed with the timewait sockets,
// not with the full sockets in FIN_WAIT2.
func TestTimewaitInFinWait2(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ns := testnet.New(t)
	ns.Sysctl(t, "net/ipv4/tcp_fin_timeout", "30")
	lfd, port := ns.Listen(t, unix.AF_INET)
	defer unix.Close(lfd)
	c := ns.Connect(t, unix.AF_INET, port)
	cport := testnet.LocalPort(t, c)
	a := testnet.Accept(t, lfd)
	defer unix.Close(a) // the server never closes: the client's timewait socket stays in FIN_WAIT2
	unix.Close(c)
	target := netns.Netns{Inode: ns.Inode, Path: ns.Path()}
	var n *Namespace
	for try := 0; try < 50; try++ { // the peer's ACK of the client's FIN makes it a timewait socket
		var err error
		n, err = Take(target, Options{TimeWaitSockets: true})
		must(t, "take", err)
		if n.TimeWaitTable == 1 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n.TimeWaitTable != 1 || len(n.TimeWaitSockets) != 1 {
		t.Fatalf("timewait table %d, listed %d, want 1 and 1", n.TimeWaitTable, len(n.TimeWaitSockets))
	}
	if s := n.TimeWaitSockets[0]; s.SPort != cport || s.State != unix.BPF_TCP_FIN_WAIT2 || s.Timer <= 0 || s.Timer > 30*time.Second {
		t.Errorf("listed %+v, want :%d in FIN_WAIT2 with up to 30 s to live", s, cport)
	}
}
