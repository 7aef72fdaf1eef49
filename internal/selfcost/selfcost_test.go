package selfcost

import (
	"os"
	"testing"

	"github.com/twtrace/twtrace/internal/bpfobj"
	"github.com/twtrace/twtrace/tracer"
)

func TestMeasureLog(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	rep, err := Measure(Options{Backend: tracer.BackendAuto, Connections: 2000, Clients: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Runs {
		t.Logf("%s %s: %+v lost %d", r.CloseFirst, r.Mode, r.Workload, r.Lost)
		for _, p := range r.Programs {
			f, _ := p.FloorPerRun()
			e, ok := p.Estimate()
			t.Logf("  %-24s runs %d (%.2f/conn) %v/run floor %v (%v runs) est %.0f %v misses %d", p.Name, p.Runs, p.RunsPerConnection(), p.Ours(), f, p.Floor, e, ok, p.Misses)
		}
	}
	h, err := bpfobj.Of(os.Getpid())
	t.Logf("held after: %+v %v", h, err)
}
