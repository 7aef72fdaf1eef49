package tracer

import "net/netip"

// Filter is applied in the kernel; zero values match everything.
type Filter struct {
	Port   uint16 // either side
	SPort  uint16 // local
	DPort  uint16 // remote
	PID    uint32 // owner
	NetNS  uint32 // inode number
	Family uint8  // 4 or 6
	Addr   netip.Prefix
	// Cgroup keeps the sockets of one cgroup subtree: the id of its root and the root's level
	// below the hierarchy's (cgroup2.Lookup, cgroup2.Level); ID 0 keeps every socket. Only the
	// kernel applies it: an event's cgroup id alone does not say which subtree it lies in.
	Cgroup CgroupFilter
}

// CgroupFilter names a cgroup v2 subtree by its root.
type CgroupFilter struct {
	ID    uint64
	Level uint32
}

// Matches reports whether a socket passes the filter's port, address and family settings,
// as wanted() in bpf/common.h decides (TestFilterTable runs both on one table). PID and
// NetNS are not properties sock_diag reports per socket: MatchesEvent applies them.
func (f Filter) Matches(family uint8, saddr, daddr netip.Addr, sport, dport uint16) bool {
	switch {
	case f.Family != 0 && f.Family != family,
		f.Port != 0 && sport != f.Port && dport != f.Port,
		f.SPort != 0 && sport != f.SPort,
		f.DPort != 0 && dport != f.DPort:
		return false
	}
	return !f.Addr.IsValid() || f.addrMatches(saddr) || f.addrMatches(daddr)
}

// addrMatches compares an address with the prefix in its own family; an IPv4 prefix also
// matches the IPv4-mapped peer of a dual-stack IPv6 socket.
func (f Filter) addrMatches(a netip.Addr) bool {
	return f.Addr.Contains(a) || (f.Addr.Addr().Is4() && a.Is4In6() && f.Addr.Contains(a.Unmap()))
}

// MatchesEvent reports whether the kernel would have delivered e under this filter: its
// namespace, its owner (an unknown owner never matches a process filter) and its socket.
func (f Filter) MatchesEvent(e *Event) bool {
	if (f.NetNS != 0 && e.NetNS != f.NetNS) || (f.PID != 0 && (!e.OwnerOK || e.PID != f.PID)) {
		return false
	}
	return f.Matches(e.Family, e.SAddr, e.DAddr, e.SPort, e.DPort)
}
