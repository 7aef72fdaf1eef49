package tracer

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
)

// What --bpf-stats costs every BPF program on the machine while it is on: the kernel's
// own average run time of an empty program (BPF_PROG_TEST_RUN, 2 million runs), with the
// statistics off and then on. The difference is the two clock reads and the counter
// update the kernel adds around each run.
//
//	go test -run '^$' -bench RunTimeStats -benchtime 5x ./tracer   (as root)
func BenchmarkRunTimeStats(b *testing.B) {
	requireRoot(b)
	if err := rlimit.RemoveMemlock(); err != nil { // before 5.11 programs are charged to it
		b.Fatal(err)
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	in := make([]byte, 64)
	counted := func() uint64 {
		s, err := p.Stats()
		if err != nil {
			b.Fatal(err)
		}
		return s.RunCount
	}
	perRun := func() float64 {
		_, d, err := p.Benchmark(in, 2_000_000, nil)
		if err != nil {
			b.Fatal(err)
		}
		return float64(d.Nanoseconds())
	}
	before := counted()
	_ = perRun()
	if counted() != before {
		b.Skip("the kernel's BPF statistics are already on (someone else holds them): nothing to compare with")
	}
	var off, on float64
	for b.Loop() {
		off += perRun()
		stats, err := EnableRunTimeStats()
		if err != nil {
			b.Fatal(err)
		}
		on += perRun()
		stats.Close()
	}
	n := float64(b.N)
	b.ReportMetric(off/n, "ns/run-off")
	b.ReportMetric(on/n, "ns/run-on")
	b.ReportMetric((on-off)/n, "ns/run-added")
}
