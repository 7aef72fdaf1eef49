package tracer

import (
	"net/netip"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
)

// filterCase is a filter, a socket, and whether the filter keeps it.
type filterCase struct {
	name   string
	filter Filter
	sock   Event // family, addresses, ports, netns, owner
	want   bool
}

var (
	v4a, v4b = netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.168.7.9")
	v6a, v6b = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fe80::2")
	mapped   = netip.MustParseAddr("::ffff:10.1.2.3")
	sock4    = Event{Family: 4, SAddr: v4a, DAddr: v4b, SPort: 40000, DPort: 443, NetNS: 7, PID: 42, OwnerOK: true}
	sock6    = Event{Family: 6, SAddr: v6a, DAddr: v6b, SPort: 40001, DPort: 8080, NetNS: 8, PID: 43, OwnerOK: true}
	dual     = Event{Family: 6, SAddr: mapped, DAddr: netip.MustParseAddr("::ffff:127.0.0.1"), SPort: 5000, DPort: 80, NetNS: 7}
)

func with(e Event, f func(*Event)) Event { f(&e); return e }

// filterCases is the one table wanted() in bpf/common.h and Filter.MatchesEvent must agree on.
var filterCases = []filterCase{
	{"no filter", Filter{}, sock4, true},
	{"port is the local port", Filter{Port: 40000}, sock4, true},
	{"port is the remote port", Filter{Port: 443}, sock4, true},
	{"port is neither", Filter{Port: 80}, sock4, false},
	{"sport", Filter{SPort: 40000}, sock4, true},
	{"sport is the remote port", Filter{SPort: 443}, sock4, false},
	{"dport", Filter{DPort: 443}, sock4, true},
	{"dport is the local port", Filter{DPort: 40000}, sock4, false},
	{"sport and dport", Filter{SPort: 40000, DPort: 443}, sock4, true},
	{"sport and a wrong dport", Filter{SPort: 40000, DPort: 444}, sock4, false},
	{"connect before the port is picked", Filter{SPort: 40000}, with(sock4, func(e *Event) { e.SPort = 0 }), false},
	{"ipv4 only", Filter{Family: 4}, sock4, true},
	{"ipv4 only, an ipv6 socket", Filter{Family: 4}, sock6, false},
	{"ipv6 only", Filter{Family: 6}, sock6, true},
	{"ipv6 only, a dual-stack socket", Filter{Family: 6}, dual, true},
	{"netns", Filter{NetNS: 7}, sock4, true},
	{"another netns", Filter{NetNS: 8}, sock4, false},
	{"pid", Filter{PID: 42}, sock4, true},
	{"another pid", Filter{PID: 43}, sock4, false},
	{"pid, owner unknown", Filter{PID: 42}, with(sock4, func(e *Event) { e.OwnerOK, e.PID = false, 0 }), false},
	{"addr, the local one", Filter{Addr: netip.MustParsePrefix("10.1.2.3/32")}, sock4, true},
	{"addr, the remote one", Filter{Addr: netip.MustParsePrefix("192.168.7.9/32")}, sock4, true},
	{"addr, a /8", Filter{Addr: netip.MustParsePrefix("10.0.0.0/8")}, sock4, true},
	{"addr, a /0", Filter{Addr: netip.MustParsePrefix("0.0.0.0/0")}, sock4, true},
	{"addr, neither", Filter{Addr: netip.MustParsePrefix("10.1.2.4/32")}, sock4, false},
	{"addr, an odd prefix", Filter{Addr: netip.MustParsePrefix("192.168.6.0/23")}, sock4, true},
	{"addr, an odd prefix missing", Filter{Addr: netip.MustParsePrefix("192.168.4.0/23")}, sock4, false},
	{"addr v6", Filter{Addr: netip.MustParsePrefix("2001:db8::/32")}, sock6, true},
	{"addr v6, a /127", Filter{Addr: netip.MustParsePrefix("fe80::2/127")}, sock6, true},
	{"addr v6, neither", Filter{Addr: netip.MustParsePrefix("2001:db9::/32")}, sock6, false},
	{"addr v6 against ipv4", Filter{Addr: netip.MustParsePrefix("::/0")}, sock4, false},
	{"addr v4 against ipv6", Filter{Addr: netip.MustParsePrefix("0.0.0.0/0")}, sock6, false},
	{"addr v4, an ipv4-mapped peer", Filter{Addr: netip.MustParsePrefix("10.0.0.0/8")}, dual, true},
	{"addr v4, a mapped peer missing", Filter{Addr: netip.MustParsePrefix("11.0.0.0/8")}, dual, false},
	{"addr v6 ::/0, a mapped peer", Filter{Addr: netip.MustParsePrefix("::/0")}, dual, true},
	{"addr v6 mapped prefix, a mapped peer", Filter{Addr: netip.MustParsePrefix("::ffff:0.0.0.0/96")}, dual, true},
	{"addr v6 mapped prefix, a v6 peer", Filter{Addr: netip.MustParsePrefix("::ffff:0.0.0.0/96")}, sock6, false},
	{"everything at once", Filter{Port: 443, SPort: 40000, DPort: 443, PID: 42, NetNS: 7, Family: 4,
		Addr: netip.MustParsePrefix("192.168.0.0/16")}, sock4, true},
	{"everything but the family", Filter{Port: 443, SPort: 40000, DPort: 443, PID: 42, NetNS: 7, Family: 6,
		Addr: netip.MustParsePrefix("192.168.0.0/16")}, sock4, false},
}

// Go's half of the table: what sock_diag's sockets and recorded events are filtered with.
func TestFilterTableGo(t *testing.T) {
	for _, c := range filterCases {
		if got := c.filter.MatchesEvent(&c.sock); got != c.want {
			t.Errorf("%s: Go says %v, want %v", c.name, got, c.want)
		}
	}
}

// The kernel's half: wanted() itself, in the test-only program test_filter, run with
// BPF_PROG_TEST_RUN on each case under that case's filter as load-time constants.
func TestFilterTableKernel(t *testing.T) {
	requireRoot(t)
	for _, c := range filterCases {
		got, err := runTestFilter(c.filter, &c.sock)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: wanted() says %v, want %v", c.name, got, c.want)
		}
	}
}

// runTestFilter loads test_filter alone with the filter's constants and runs it on e.
func runTestFilter(f Filter, e *Event) (bool, error) {
	spec, err := loadTwtrace()
	if err != nil {
		return false, err
	}
	for name := range spec.Programs {
		if name != twtraceProgTestFilter {
			delete(spec.Programs, name)
		}
	}
	for name := range spec.Maps {
		if !strings.HasPrefix(name, ".") { // the data sections hold the constants
			delete(spec.Maps, name)
		}
	}
	if err := set(spec, filterSettings(f)); err != nil {
		return false, err
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return false, err
	}
	defer coll.Close()
	fc := twtraceFilterCase{Netns: e.NetNS, Pid: e.PID, Sport: e.SPort, Dport: e.DPort, Family: e.Family}
	if e.OwnerOK {
		fc.OwnerKnown = 1
	}
	if e.Family == 4 {
		s, d := e.SAddr.As4(), e.DAddr.As4()
		copy(fc.Saddr[:], s[:])
		copy(fc.Daddr[:], d[:])
	} else {
		fc.Saddr, fc.Daddr = e.SAddr.As16(), e.DAddr.As16()
	}
	ctx := (*[unsafe.Sizeof(fc) / 8]uint64)(unsafe.Pointer(&fc))
	ret, err := coll.Programs[twtraceProgTestFilter].Run(&ebpf.RunOptions{Context: ctx[:]})
	return ret != 0, err
}
