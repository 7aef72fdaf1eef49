package workload

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/cgroup2"
)

// The per-event cost of naming an event's workload once its cgroup is known: what the reader's
// consumers pay per event (a miss is paid once per new cgroup, off the reader).
func BenchmarkCgroupHit(b *testing.B) {
	r, ids := benchResolver(b, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, ok := r.Cgroup(ids[i%len(ids)]); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkCgroupHitParallel(b *testing.B) {
	r, ids := benchResolver(b, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			r.Cgroup(ids[i%len(ids)])
		}
	})
}

// A miss's walk of a tree of 1000 pod and container cgroups.
func BenchmarkWalk1000(b *testing.B) {
	r, _ := benchResolver(b, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.walk()
	}
}

// A miss's walk of this machine's own cgroup2 hierarchy.
func BenchmarkWalkThisMachine(b *testing.B) {
	h, err := cgroup2.Find()
	if err != nil {
		b.Skip(err)
	}
	r := New(Options{Hierarchy: &h, MinRefresh: time.Nanosecond})
	n := 0
	h.Walk(func(string, uint64) { n++ })
	b.ReportMetric(float64(n), "cgroups")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.walk()
	}
}

func benchResolver(b *testing.B, n int) (*Resolver, []uint64) {
	h := cgroup2.Hierarchy{Mount: b.TempDir(), Root: "/"}
	var ids []uint64
	for i := range n / 2 {
		pod := fmt.Sprintf("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%08x_1c3e_4b8f_9a1d_7e2c5b8a9d10.slice", i)
		for _, p := range []string{pod, fmt.Sprintf("%s/cri-containerd-%064x.scope", pod, i)} {
			dir, _ := h.Dir(p)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
			_, id, err := h.Lookup(p)
			if err != nil {
				b.Fatal(err)
			}
			ids = append(ids, id)
		}
	}
	r := New(Options{Hierarchy: &h, MinRefresh: time.Nanosecond})
	for _, id := range ids {
		if _, ok := r.Cgroup(id); !ok {
			b.Fatal("not resolved")
		}
	}
	return r, ids
}

// A miss on this machine's hierarchy answered through the cgroup's file handle (as root), the
// way a new cgroup's first event is named.
func BenchmarkMissByHandle(b *testing.B) {
	h, err := cgroup2.Find()
	if err != nil {
		b.Skip(err)
	}
	var ids []uint64
	h.Walk(func(_ string, id uint64) { ids = append(ids, id) })
	b.ReportMetric(float64(len(ids)), "cgroups")
	r := New(Options{Hierarchy: &h})
	r.Cgroup(ids[0]) // the first miss sweeps
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r.find(ids[i%len(ids)]) // a cgroup another process removed meanwhile is a miss like any other
	}
}
