package main

import (
	"testing"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

func TestAppendCosts(t *testing.T) {
	costs := []tracer.ProgramCost{
		{Name: "read_jiffies"},
		{Name: "tp_set_state", Runs: 1000, RunTime: 150 * time.Microsecond, RecursionMisses: 2},
		{Name: "tp_timer_start", Runs: 4000, RunTime: 200 * time.Microsecond},
	}
	got := string(appendCosts(nil, costs, 10*time.Second))
	want := "twtrace: kernel cost (--bpf-stats) over 10.0 s: 350µs on the CPUs (0.00% of one CPU); " +
		"tp_timer_start 4000 runs at 50 ns, tp_set_state 1000 runs at 150 ns; 2 runs skipped (recursion misses)"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got, want := string(appendCosts(nil, costs[:1], time.Second)), "twtrace: kernel cost (--bpf-stats) over 1.0 s: 0s on the CPUs (0.00% of one CPU); no program ran; 0 runs skipped (recursion misses)"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
