package tracer

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkCountSockets counts TWTRACE_BENCH_SOCKETS sockets (default 1,000,000: half
// clients, half accepted, plus the listeners) in a private namespace. Building them
// takes a while and a few GiB; the timed part is the sock_diag dump and count.
func BenchmarkCountSockets(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates a network namespace and a million sockets")
	}
	total := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("TWTRACE_BENCH_SOCKETS")); err == nil {
		total = v
	}
	ns := newNetns(b)
	ns.Sysctl(b, "net/ipv4/ip_local_port_range", "1024 65535")
	ns.Sysctl(b, "net/core/somaxconn", "65535")
	// one process may hold only RLIMIT_NOFILE sockets: children born in the namespace hold them
	perChild := 2 * ((fileLimit(b) - 200) / 2)
	made := 0
	var release []func()
	defer func() {
		for _, r := range release {
			r()
		}
	}()
	for made < total {
		n := min(perChild, total-made)
		release = append(release, startChildHolder(b, ns, n))
		made += n + 1 // its pairs and its listener
	}
	target := Netns{Inode: ns.inode, Path: "/proc/self/fd/" + strconv.Itoa(ns.fd)}
	b.ResetTimer()
	var c SocketCounts
	for i := 0; i < b.N; i++ {
		var err error
		if c, err = CountSockets(target, Filter{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if c.Total != uint64(made) {
		b.Fatalf("counted %d sockets, made %d", c.Total, made)
	}
	b.ReportMetric(float64(c.Total), "sockets/op")
}

func fileLimit(b *testing.B) int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	return int(lim.Max)
}
