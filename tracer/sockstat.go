package tracer

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SocketCounts is one namespace's TCP sockets by state, read from the kernel in one pass.
type SocketCounts struct {
	NetNS   uint32
	Total   uint64
	ByState [StateNewSynRecv + 1]uint64
	// MaxTWBuckets is net.ipv4.tcp_max_tw_buckets, -1 when unreadable.
	MaxTWBuckets int64
	// PortLow..PortHigh is net.ipv4.ip_local_port_range (0, 0 when unreadable).
	PortLow, PortHigh uint16
	// EphemeralPorts counts distinct local ports inside that range that some socket holds.
	EphemeralPorts int
}

// Matches reports whether a socket passes the filter's port, address and family
// settings (PID and NetNS are not properties sock_diag reports per socket).
func (f Filter) Matches(family uint8, saddr, daddr netip.Addr, sport, dport uint16) bool {
	switch {
	case f.Family != 0 && f.Family != family,
		f.Port != 0 && sport != f.Port && dport != f.Port,
		f.SPort != 0 && sport != f.SPort,
		f.DPort != 0 && dport != f.DPort:
		return false
	}
	return !f.Addr.IsValid() || f.Addr.Contains(saddr.Unmap()) || f.Addr.Contains(daddr.Unmap())
}

// CountSockets dumps the namespace's TCP sockets (IPv4 and IPv6, every state, timewait
// sockets included) through NETLINK_SOCK_DIAG, counting those the filter matches.
func CountSockets(ns Netns, filter Filter) (SocketCounts, error) {
	c := SocketCounts{NetNS: ns.Inode, MaxTWBuckets: -1}
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			return fmt.Errorf("open sock_diag netlink: %w", err)
		}
		if v, err := strconv.ParseInt(readSysctl("net/ipv4/tcp_max_tw_buckets"), 10, 64); err == nil {
			c.MaxTWBuckets = v
		}
		if f := strings.Fields(readSysctl("net/ipv4/ip_local_port_range")); len(f) == 2 {
			lo, _ := strconv.ParseUint(f[0], 10, 16)
			hi, _ := strconv.ParseUint(f[1], 10, 16)
			c.PortLow, c.PortHigh = uint16(lo), uint16(hi)
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	defer unix.Close(fd)
	var used [1 << 16]bool
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		err := dumpTCP(fd, family, ^uint32(0), func(msg []byte) {
			state, sport := msg[1], binary.BigEndian.Uint16(msg[4:6])
			if filter != (Filter{}) {
				fam, saddr, daddr, dport := msgTuple(msg)
				if !filter.Matches(fam, saddr, daddr, sport, dport) {
					return
				}
			}
			c.Total++
			if int(state) < len(c.ByState) {
				c.ByState[state]++
			}
			if sport >= c.PortLow && sport <= c.PortHigh && !used[sport] {
				used[sport] = true
				c.EphemeralPorts++
			}
		})
		if err != nil {
			return c, err
		}
	}
	return c, nil
}

// inetDiagReqV2 is struct inet_diag_req_v2 from include/uapi/linux/inet_diag.h.
type inetDiagReqV2 struct {
	Family   uint8
	Protocol uint8
	Ext      uint8
	Pad      uint8
	States   uint32
	ID       [48]byte
}

const sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY

// dumpTCP asks for the TCP sockets of one family in the states of the mask and calls fn
// with each struct inet_diag_msg (family, state, timer, retrans, then the socket id:
// sport, dport big endian, src and dst 16 bytes each).
func dumpTCP(fd int, family uint8, states uint32, fn func(msg []byte)) error {
	req := struct {
		hdr unix.NlMsghdr
		req inetDiagReqV2
	}{
		hdr: unix.NlMsghdr{Type: sockDiagByFamily, Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP, Seq: 1},
		req: inetDiagReqV2{Family: family, Protocol: unix.IPPROTO_TCP, States: states},
	}
	req.hdr.Len = uint32(unsafe.Sizeof(req))
	buf := (*[unsafe.Sizeof(req)]byte)(unsafe.Pointer(&req))[:]
	if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	rb := make([]byte, 1<<20)
	for {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if err != nil {
			return fmt.Errorf("sock_diag dump: %w", err)
		}
		if n >= unix.NLMSG_HDRLEN+4 && binary.NativeEndian.Uint16(rb[4:6]) == unix.NLMSG_ERROR &&
			int32(binary.NativeEndian.Uint32(rb[unix.NLMSG_HDRLEN:])) == -int32(unix.ENOENT) {
			return fmt.Errorf("sock_diag has no TCP handler: load it with 'modprobe tcp_diag' (CONFIG_INET_DIAG/CONFIG_INET_TCP_DIAG)")
		}
		for b := rb[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := binary.NativeEndian.Uint32(b[0:4])
			typ := binary.NativeEndian.Uint16(b[4:6])
			if l < unix.NLMSG_HDRLEN || int(l) > len(b) {
				return fmt.Errorf("sock_diag dump: malformed message")
			}
			msg := b[unix.NLMSG_HDRLEN:l]
			switch typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(msg) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(msg)); errno != 0 {
						return fmt.Errorf("sock_diag dump: %w", unix.Errno(-errno))
					}
				}
				return nil
			case sockDiagByFamily:
				if len(msg) >= 40 {
					fn(msg)
				}
			}
			b = b[min(int(l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
		}
	}
}

// Destination is one local address's connections to one remote endpoint: the unit
// whose ephemeral ports run out, since each needs a distinct local port.
type Destination struct {
	NetNS uint32
	SAddr netip.Addr
	DAddr netip.Addr
	DPort uint16
}

// TimewaitByDestination counts the namespace's TIME_WAIT sockets per destination.
func TimewaitByDestination(ns Netns) (map[Destination]int, error) {
	var fd int
	err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open sock_diag netlink: %w", err)
	}
	defer unix.Close(fd)
	out := map[Destination]int{}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		err := dumpTCP(fd, family, 1<<uint(StateTimeWait), func(msg []byte) {
			_, saddr, daddr, dport := msgTuple(msg)
			out[Destination{NetNS: ns.Inode, SAddr: saddr, DAddr: daddr, DPort: dport}]++
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// msgTuple reads a struct inet_diag_msg's family (4 or 6), addresses and remote port.
func msgTuple(msg []byte) (family uint8, saddr, daddr netip.Addr, dport uint16) {
	dport = binary.BigEndian.Uint16(msg[6:8])
	if msg[0] == unix.AF_INET {
		return 4, netip.AddrFrom4([4]byte(msg[8:12])), netip.AddrFrom4([4]byte(msg[24:28])), dport
	}
	return 6, netip.AddrFrom16([16]byte(msg[8:24])), netip.AddrFrom16([16]byte(msg[24:40])), dport
}
