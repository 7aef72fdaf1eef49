package workload

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// inetDiagCgroupID is INET_DIAG_CGROUP_ID (uapi linux/inet_diag.h, 5.9+): the socket's cgroup v2 id,
// the kernel's own answer to "which cgroup made this socket".
const inetDiagCgroupID = 21

// struct inet_diag_req_v2; the reply's struct inet_diag_msg is 72 bytes, attributes follow.
type inetDiagReqV2 struct {
	Family, Protocol, Ext, Pad uint8
	States                     uint32
	ID                         [48]byte
}

const inetDiagMsgLen = 72

// listenerCgroupID asks the kernel (sock_diag, in the calling thread's network namespace) for the
// cgroup id of the IPv4 TCP socket listening on port.
func listenerCgroupID(port uint16) (uint64, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	req := struct {
		hdr unix.NlMsghdr
		req inetDiagReqV2
	}{
		hdr: unix.NlMsghdr{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP, Seq: 1},
		req: inetDiagReqV2{Family: unix.AF_INET, Protocol: unix.IPPROTO_TCP, States: 1 << unix.BPF_TCP_LISTEN},
	}
	req.hdr.Len = uint32(unsafe.Sizeof(req))
	if err := unix.Sendto(fd, (*[unsafe.Sizeof(req)]byte)(unsafe.Pointer(&req))[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return 0, err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_DONE || m.Header.Type == unix.NLMSG_ERROR {
				return 0, fmt.Errorf("no socket listening on port %d", port)
			}
			if len(m.Data) < inetDiagMsgLen || binary.BigEndian.Uint16(m.Data[4:6]) != port {
				continue
			}
			for attrs := m.Data[inetDiagMsgLen:]; len(attrs) >= 4; {
				l, typ := int(binary.NativeEndian.Uint16(attrs[0:2])), binary.NativeEndian.Uint16(attrs[2:4])
				if l < 4 || l > len(attrs) {
					break
				}
				if typ == inetDiagCgroupID && l >= 12 {
					return binary.NativeEndian.Uint64(attrs[4:12]), nil
				}
				attrs = attrs[min((l+3)&^3, len(attrs)):]
			}
			return 0, fmt.Errorf("sock_diag gave no cgroup id for port %d (kernel older than 5.9?)", port)
		}
	}
}
