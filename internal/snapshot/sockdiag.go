package snapshot

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// inetDiagReqV2 is struct inet_diag_req_v2 from include/uapi/linux/inet_diag.h.
type inetDiagReqV2 struct {
	Family   uint8
	Protocol uint8
	Ext      uint8
	Pad      uint8
	States   uint32
	ID       [48]byte
}

// inetDiagMsgLen is the size of struct inet_diag_msg: family, state, timer, retrans, the
// socket id (sport, dport big endian, src and dst 16 bytes each, interface, cookie), then
// expires (ms), rqueue, wqueue, uid, inode.
const inetDiagMsgLen = 72

// dumps counts sock_diag dumps, for the tests that hold Take to one per address family.
var dumps atomic.Int64

// dumpTCP asks for the TCP sockets of one family in the states of the mask and calls fn
// with each struct inet_diag_msg.
func dumpTCP(fd int, family uint8, states uint32, fn func(msg []byte)) error {
	dumps.Add(1)
	req := struct {
		hdr unix.NlMsghdr
		req inetDiagReqV2
	}{
		hdr: unix.NlMsghdr{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP, Seq: 1},
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
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(msg) >= inetDiagMsgLen {
					fn(msg)
				}
			}
			b = b[min(int(l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
		}
	}
}

// parseSocket reads a struct inet_diag_msg.
func parseSocket(msg []byte) Socket {
	s := Socket{
		State: msg[1],
		SPort: binary.BigEndian.Uint16(msg[4:6]),
		DPort: binary.BigEndian.Uint16(msg[6:8]),
		Timer: time.Duration(binary.NativeEndian.Uint32(msg[52:56])) * time.Millisecond,
	}
	if msg[0] == unix.AF_INET {
		s.Family, s.SAddr, s.DAddr = 4, netip.AddrFrom4([4]byte(msg[8:12])), netip.AddrFrom4([4]byte(msg[24:28]))
	} else {
		s.Family, s.SAddr, s.DAddr = 6, netip.AddrFrom16([16]byte(msg[8:24])), netip.AddrFrom16([16]byte(msg[24:40]))
	}
	return s
}
