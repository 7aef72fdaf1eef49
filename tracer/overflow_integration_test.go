package tracer

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// With tcp_max_tw_buckets=4, 20 client-first connections leave 4 timewait sockets;
// the other 16 closes are overflows, exactly as many as the kernel counts.
func TestOverflowMatchesKernelCounter(t *testing.T) {
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		t.Run(familyName(family), func(t *testing.T) {
			t.Parallel()
			requireRoot(t)
			ns := newNetns(t)
			ns.Sysctl(t, "net/ipv4/tcp_max_tw_buckets", "4")
			c := startTracer(t, Options{Filter: Filter{NetNS: ns.inode}})
			before := ns.Netstat(t, "TCPTimeWaitOverflow")
			lfd, port := listenIn(t, ns, family)
			defer unix.Close(lfd)
			const n = 20
			for i := 0; i < n; i++ {
				clientCloses(t, ns, family, lfd, port)
			}
			overflowed := ns.Netstat(t, "TCPTimeWaitOverflow") - before
			if overflowed != 16 {
				t.Fatalf("kernel counted %d overflows, want 16 (is tcp_max_tw_buckets per namespace here?)", overflowed)
			}
			evs := c.waitFor(t, 5*time.Second, "20 client closes", func(evs []Event) bool {
				return len(filter(evs, func(e *Event) bool {
					return e.Kind == KindTWEnter || e.Kind == KindTWOverflow
				})) >= n
			})
			enters, overflows := filter(evs, ofKind(KindTWEnter)), filter(evs, ofKind(KindTWOverflow))
			if len(enters) != 4 || uint64(len(overflows)) != overflowed {
				t.Fatalf("%d tw_enter and %d tw_overflow, want 4 and %d:\n%s", len(enters), len(overflows), overflowed, dump(evs))
			}
			for _, o := range overflows {
				if o.MaxBuckets != 4 || o.Substate != StateTimeWait || o.DPort != port || !o.OwnerOK || o.NetNS != ns.inode {
					t.Errorf("overflow should name the 4-bucket limit, TIME_WAIT, the peer and the owner: %s", o)
				}
			}
			if k := ns.TimeWaitCount(t); k != 4 {
				t.Errorf("kernel lists %d timewait sockets, want 4", k)
			}
		})
	}
}
