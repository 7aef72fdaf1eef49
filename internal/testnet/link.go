package testnet

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The rtnetlink requests the tests need to join namespaces by veth pairs and route
// between them, sent from the calling thread's namespace (run them inside Do). Nothing
// here reaches a network outside the test's namespaces.

// vethInfoPeer is VETH_INFO_PEER (linux/veth.h), which x/sys/unix does not carry.
const vethInfoPeer = 1

// AddVeth creates the veth pair name (here) and peer, the peer in the namespace open at peerNS.
func AddVeth(name, peer string, peerNS int) error {
	r := newRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL, ifinfo())
	r.attr(unix.IFLA_IFNAME, cstring(name))
	r.nest(unix.IFLA_LINKINFO, func() {
		r.attr(unix.IFLA_INFO_KIND, cstring("veth"))
		r.nest(unix.IFLA_INFO_DATA, func() {
			r.nest(vethInfoPeer, func() {
				r.raw(ifinfo())
				r.attr(unix.IFLA_IFNAME, cstring(peer))
				r.attr(unix.IFLA_NET_NS_FD, u32(uint32(peerNS)))
			})
		})
	})
	return r.send("add veth " + name)
}

// AddAddr adds addr (with its prefix length) to the interface, and brings it up. IPv6
// addresses skip duplicate address detection, so they are usable at once.
func AddAddr(ifname string, addr netip.Prefix) error {
	index, err := up(ifname)
	if err != nil {
		return err
	}
	msg := unix.IfAddrmsg{Family: family(addr.Addr()), Prefixlen: uint8(addr.Bits()), Index: uint32(index)}
	if addr.Addr().Is6() {
		msg.Flags = unix.IFA_F_NODAD
	}
	r := newRequest(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, bytesOf(&msg))
	r.attr(unix.IFA_LOCAL, addr.Addr().AsSlice())
	r.attr(unix.IFA_ADDRESS, addr.Addr().AsSlice())
	return r.send(fmt.Sprintf("add %s to %s", addr, ifname))
}

// Route kinds for AddRoute.
const (
	RouteVia         = unix.RTN_UNICAST     // through a gateway
	RouteUnreachable = unix.RTN_UNREACHABLE // answered with ICMP unreachable when forwarded
	RouteBlackhole   = unix.RTN_BLACKHOLE   // dropped without a word
)

// AddRoute routes dst in the main table: through gateway for RouteVia (gateway is
// ignored otherwise).
func AddRoute(dst netip.Prefix, kind uint8, gateway netip.Addr) error {
	msg := unix.RtMsg{Family: family(dst.Addr()), Dst_len: uint8(dst.Bits()), Table: unix.RT_TABLE_MAIN,
		Protocol: unix.RTPROT_STATIC, Scope: unix.RT_SCOPE_UNIVERSE, Type: kind}
	r := newRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, bytesOf(&msg))
	r.attr(unix.RTA_DST, dst.Addr().AsSlice())
	if kind == RouteVia {
		r.attr(unix.RTA_GATEWAY, gateway.AsSlice())
	}
	return r.send(fmt.Sprintf("add route to %s", dst))
}

// up sets IFF_UP on the interface and returns its index.
func up(ifname string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(ifname)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return 0, fmt.Errorf("get %s flags: %w", ifname, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return 0, fmt.Errorf("bring %s up: %w", ifname, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("index of %s: %w", ifname, err)
	}
	return int(ifr.Uint32()), nil
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func ifinfo() []byte { return bytesOf(&unix.IfInfomsg{Family: unix.AF_UNSPEC}) }

func bytesOf[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

func cstring(s string) []byte { return append([]byte(s), 0) }

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// request is one rtnetlink request under construction.
type request struct{ buf []byte }

func newRequest(typ, flags uint16, body []byte) *request {
	r := &request{buf: make([]byte, unix.SizeofNlMsghdr, 256)}
	binary.NativeEndian.PutUint16(r.buf[4:], typ)
	binary.NativeEndian.PutUint16(r.buf[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	r.raw(body)
	return r
}

func align(n int) int { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }

func (r *request) raw(b []byte) {
	r.buf = append(r.buf, b...)
	r.buf = append(r.buf, make([]byte, align(len(r.buf))-len(r.buf))...)
}

func (r *request) attr(typ uint16, data []byte) {
	hdr := make([]byte, unix.SizeofRtAttr)
	binary.NativeEndian.PutUint16(hdr, uint16(unix.SizeofRtAttr+len(data)))
	binary.NativeEndian.PutUint16(hdr[2:], typ)
	r.raw(append(hdr, data...))
}

func (r *request) nest(typ uint16, body func()) {
	start := len(r.buf)
	r.attr(typ|unix.NLA_F_NESTED, nil)
	body()
	binary.NativeEndian.PutUint16(r.buf[start:], uint16(len(r.buf)-start))
}

// send sends the request and reads the kernel's acknowledgement.
func (r *request) send(what string) error {
	binary.NativeEndian.PutUint32(r.buf, uint32(len(r.buf)))
	binary.NativeEndian.PutUint32(r.buf[8:], 1)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, r.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	ack := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, ack, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n < unix.SizeofNlMsghdr+4 || binary.NativeEndian.Uint16(ack[4:]) != unix.NLMSG_ERROR {
		return fmt.Errorf("%s: unexpected netlink answer", what)
	}
	if errno := -int32(binary.NativeEndian.Uint32(ack[unix.SizeofNlMsghdr:])); errno != 0 {
		return fmt.Errorf("%s: %w", what, unix.Errno(errno))
	}
	return nil
}
