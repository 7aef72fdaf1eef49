package main

import (
	"io"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/cgroup2"
	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// BenchmarkPrinterEvent prints state events of a named cgroup as watch -o json does with
// workloads to name, flushing every 4 events (the reader finding the ring buffer empty),
// to the end of the stream. Run it with -cpu 1: the time per event is then the CPU the
// printing takes, wherever it runs.
func BenchmarkPrinterEvent(b *testing.B) {
	h := cgroup2.Hierarchy{Mount: b.TempDir(), Root: "/"}
	dir, _ := h.Dir("/system.slice/nginx.service")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	_, id, err := h.Lookup("/system.slice/nginx.service")
	if err != nil {
		b.Fatal(err)
	}
	names := &workloads{cgroups: true, names: workload.New(workload.Options{Hierarchy: &h})}
	names.cgroup(id)
	p := newPrinter(io.Discard, true, names)
	lo := netip.MustParseAddr("127.0.0.1")
	e := tracer.Event{Kind: tracer.KindState, Time: time.Now(), Family: 4, SAddr: lo, DAddr: lo, SPort: 40000,
		DPort: 8080, NetNS: 4026531840, PID: 42, Comm: [16]byte{'c', 'h', 'u', 'r', 'n'}, Cgroup: id,
		OldState: tracer.StateEstablished, NewState: tracer.StateFinWait1}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		p.event(&e)
		if i%4 == 3 {
			p.flush()
		}
	}
	p.stop()
}
