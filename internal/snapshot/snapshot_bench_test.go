package snapshot

import (
	"os"
	"strconv"
	"testing"

	"github.com/twtrace/twtrace/internal/netns"
	"github.com/twtrace/twtrace/internal/testnet"
)

// BenchmarkTake snapshots a namespace holding TWTRACE_BENCH_SOCKETS sockets (default
// 1,000,000: half clients, half accepted, plus the listeners). Building them takes a while
// and a few GiB; the timed part is the snapshot: one sock_diag dump per family, parsed
// and counted, and the namespace's settings and counters.
func BenchmarkTake(b *testing.B) {
	requireRoot(b)
	total := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("TWTRACE_BENCH_SOCKETS")); err == nil {
		total = v
	}
	ns := testnet.New(b)
	ns.Sysctl(b, "net/ipv4/ip_local_port_range", "1024 65535")
	ns.Sysctl(b, "net/core/somaxconn", "65535")
	// one process may hold only RLIMIT_NOFILE sockets: children born in the namespace hold them
	perChild := 2 * ((testnet.FileLimit(b) - 200) / 2)
	made := 0
	for made < total {
		n := min(perChild, total-made)
		defer ns.HoldSockets(b, n)()
		made += n + 1 // its pairs and its listener
	}
	target := netns.Netns{Inode: ns.Inode, Path: ns.Path()}
	b.ResetTimer()
	var n *Namespace
	for i := 0; i < b.N; i++ {
		var err error
		if n, err = Take(target, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if n.Total != uint64(made) {
		b.Fatalf("counted %d sockets, made %d", n.Total, made)
	}
	b.ReportMetric(float64(n.Total), "sockets/op")
}
