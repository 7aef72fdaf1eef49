// Package snapshot reads a network namespace's live TCP state from the kernel, now: its
// sockets (one NETLINK_SOCK_DIAG dump per address family, timewait sockets included), the
// TIME_WAIT sysctls and the kernel's TCP counters. It needs no BPF.
package snapshot

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/twtrace/twtrace/internal/netns"
	"golang.org/x/sys/unix"
)

// Socket is one socket as sock_diag reports it.
type Socket struct {
	Family uint8 // 4 or 6
	// State is the kernel's number (include/net/tcp_states.h); a timewait socket reports
	// its substate, TIME_WAIT or FIN_WAIT2.
	State        uint8
	SAddr, DAddr netip.Addr
	SPort, DPort uint16 // local, remote
	// Timer is what is left of the socket's timer: for a timewait socket, its life.
	Timer time.Duration
}

// Destination is one local address's connections to one remote endpoint: the unit whose
// ephemeral ports run out, since each needs a distinct local port.
type Destination struct {
	NetNS uint32
	SAddr netip.Addr
	DAddr netip.Addr
	DPort uint16
}

// Options say what a snapshot keeps.
type Options struct {
	// Keep selects the sockets counted (the user's filters); nil keeps every one.
	Keep func(*Socket) bool
	// TimeWaitSockets keeps every kept TIME_WAIT socket, not only their counts.
	TimeWaitSockets bool
}

// Namespace is one network namespace's TCP state at one moment.
type Namespace struct {
	NetNS uint32
	Time  time.Time

	// Total and ByState count the sockets Options.Keep kept, ByState indexed by the
	// kernel's state number.
	Total   uint64
	ByState [16]uint64
	// EphemeralPorts counts distinct local ports inside ip_local_port_range that a kept
	// socket holds.
	EphemeralPorts int
	// TimeWait counts the kept timewait sockets (TIME_WAIT, or FIN_WAIT2 for one orphaned
	// before the peer's FIN) per destination.
	TimeWait map[Destination]int
	// TimeWaitSockets lists them, when Options.TimeWaitSockets asks for it.
	TimeWaitSockets []Socket
	// TimeWaitTable counts every TIME_WAIT socket of the namespace, kept or not: the
	// table tcp_max_tw_buckets limits.
	TimeWaitTable uint64
	// Connected counts the kept sockets neither listening nor in TIME_WAIT whose local port
	// is in ip_local_port_range, per destination: each holds one of its ports towards it.
	Connected map[Destination]int
	// BoundPorts counts the distinct ports of ip_local_port_range that listeners hold, kept
	// or not: connect() never takes a port bound with bind().
	BoundPorts int

	Limits Limits
	// Sysctls holds TimewaitSysctls by name, whitespace collapsed to one space; one the
	// kernel lacks is absent.
	Sysctls map[string]string
	// Counters are the namespace's TCP counters by nstat's names; nil when unreadable.
	Counters Counters
}

// Limits are the sysctls TIME_WAIT counts against.
type Limits struct {
	MaxTWBuckets      int64  // net.ipv4.tcp_max_tw_buckets, -1 when unreadable
	PortLow, PortHigh uint16 // net.ipv4.ip_local_port_range, 0 0 when unreadable
}

// PortRangeSize is the number of ephemeral ports, 0 when unknown.
func (l Limits) PortRangeSize() int {
	if l.PortHigh == 0 || l.PortHigh < l.PortLow {
		return 0
	}
	return int(l.PortHigh) - int(l.PortLow) + 1
}

// Take reads the namespace: its settings and counters from inside it, then one sock_diag
// dump per address family through a netlink socket opened there.
func Take(ns netns.Netns, opts Options) (*Namespace, error) {
	n, fd, err := take(ns, true)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	c := counter{n: n, opts: opts}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := dumpTCP(fd, family, ^uint32(0), c.add); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// TakeSettings reads the namespace's settings and counters only: no socket is dumped, so
// the socket fields are empty.
func TakeSettings(ns netns.Netns) (*Namespace, error) {
	n, _, err := take(ns, false)
	return n, err
}

// take reads what needs the calling thread inside the namespace, and opens the netlink
// socket the dump then uses from anywhere.
func take(ns netns.Netns, dump bool) (_ *Namespace, fd int, _ error) {
	n := &Namespace{NetNS: ns.Inode, TimeWait: map[Destination]int{}, Connected: map[Destination]int{}}
	err := ns.Do(func() error {
		if dump {
			var err error
			if fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG); err != nil {
				return fmt.Errorf("open sock_diag netlink: %w", err)
			}
		}
		n.Sysctls = readSysctls()
		if c, err := ReadCounters("/proc/thread-self/net"); err == nil {
			n.Counters = c
		}
		return nil
	})
	if err != nil {
		return nil, -1, err
	}
	n.Limits = limitsOf(n.Sysctls)
	n.Time = time.Now()
	return n, fd, nil
}

// timewaitTimer is inet_diag_msg.idiag_timer for a timewait socket.
const timewaitTimer = 3

// counter folds the dump's sockets into a Namespace.
type counter struct {
	n     *Namespace
	opts  Options
	used  [1 << 16]bool // local ports seen inside the range
	bound [1 << 16]bool // of them, held by listeners
}

func (c *counter) add(msg []byte) {
	n, state := c.n, msg[1]
	sport := binary.BigEndian.Uint16(msg[4:6])
	ephemeral := sport >= n.Limits.PortLow && sport <= n.Limits.PortHigh
	// a timewait socket reports its substate (TIME_WAIT, or FIN_WAIT2 when orphaned before
	// the peer's FIN) and the timewait timer, 3 (inet_twsk_diag_fill)
	timewait := state == unix.BPF_TCP_TIME_WAIT || msg[2] == timewaitTimer
	if timewait {
		n.TimeWaitTable++
	}
	if state == unix.BPF_TCP_LISTEN && ephemeral && !c.bound[sport] {
		c.bound[sport] = true
		n.BoundPorts++
	}
	var s Socket
	parsed := false
	if c.opts.Keep != nil {
		s, parsed = parseSocket(msg), true
		if !c.opts.Keep(&s) {
			return
		}
	}
	n.Total++
	n.ByState[state&15]++
	if ephemeral && !c.used[sport] {
		c.used[sport] = true
		n.EphemeralPorts++
	}
	if !timewait && (state == unix.BPF_TCP_LISTEN || !ephemeral) {
		return
	}
	if !parsed {
		s = parseSocket(msg)
	}
	d := Destination{NetNS: n.NetNS, SAddr: s.SAddr, DAddr: s.DAddr, DPort: s.DPort}
	if !timewait {
		n.Connected[d]++
		return
	}
	n.TimeWait[d]++
	if c.opts.TimeWaitSockets {
		n.TimeWaitSockets = append(n.TimeWaitSockets, s)
	}
}
