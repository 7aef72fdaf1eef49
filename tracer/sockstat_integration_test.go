package tracer

import (
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The counts are exact for sockets the test made, and agree with ss where ss exists.
func TestCountSocketsMatchesKernel(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	ns.Sysctl(t, "net/ipv4/tcp_max_tw_buckets", "1234")
	ns.Sysctl(t, "net/ipv4/ip_local_port_range", "40000 40999")
	lfd, port := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd)
	l6, _ := listenIn(t, ns, unix.AF_INET6)
	defer unix.Close(l6)
	for i := 0; i < 5; i++ {
		clientCloses(t, ns, unix.AF_INET, lfd, port) // 5 clients in TIME_WAIT
	}
	for i := 0; i < 3; i++ { // 3 established pairs
		cfd, _ := connectIn(t, ns, unix.AF_INET, port, 0)
		defer unix.Close(cfd)
		afd := acceptOn(t, lfd)
		defer unix.Close(afd)
	}

	c, err := CountSockets(Netns{Inode: ns.inode, Path: "/proc/self/fd/" + itoa(ns.fd)}, Filter{})
	must(t, "count sockets", err)
	want := map[State]uint64{StateListen: 2, StateEstablished: 6, StateTimeWait: 5}
	for s := StateEstablished; s <= StateNewSynRecv; s++ {
		if c.ByState[s] != want[s] {
			t.Errorf("%s: %d sockets, want %d", s, c.ByState[s], want[s])
		}
	}
	if c.Total != 13 || c.NetNS != ns.inode || c.MaxTWBuckets != 1234 || c.PortLow != 40000 || c.PortHigh != 40999 {
		t.Errorf("got %+v", c)
	}
	// the two listeners got ports from the range too; then 5 timewait and 3 established clients
	if c.EphemeralPorts != 10 {
		t.Errorf("%d ephemeral ports in use, want 10", c.EphemeralPorts)
	}
	// the filters of watch, applied to the dump
	target := Netns{Inode: ns.inode, Path: "/proc/self/fd/" + itoa(ns.fd)}
	for _, fc := range []struct {
		name   string
		filter Filter
		want   uint64
	}{
		{"port", Filter{Port: port}, 12}, // the IPv4 listener, 5 timewait clients, 3 pairs
		{"ipv6", Filter{Family: 6}, 1},
		{"addr", Filter{Addr: mustPrefix("::1/128")}, 1},
		{"dport", Filter{DPort: port}, 8},
	} {
		got, err := CountSockets(target, fc.filter)
		must(t, "count sockets", err)
		if got.Total != fc.want {
			t.Errorf("filter %s: %d sockets, want %d", fc.name, got.Total, fc.want)
		}
	}
	if ss, err := exec.LookPath("ss"); err == nil {
		var out []byte
		ns.Do(func() { out, err = exec.Command(ss, "-Htan").Output() })
		must(t, "ss", err)
		if n := len(strings.Split(strings.TrimSpace(string(out)), "\n")); uint64(n) != c.Total {
			t.Errorf("ss lists %d sockets, sock_diag %d:\n%s", n, c.Total, out)
		}
	}
}
