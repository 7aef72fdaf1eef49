package tracer

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ProgramCost is one of twtrace's programs as the kernel counts it.
type ProgramCost struct {
	Name string
	// Runs and RunTime grow only while the kernel's run-time statistics are on
	// (EnableRunTimeStats, or the sysctl kernel.bpf_stats_enabled).
	Runs    uint64
	RunTime time.Duration
	// RecursionMisses are runs the kernel skipped: the program was already running on
	// that CPU (Linux 5.12+; always counted).
	RecursionMisses uint64
}

// PerRun is the average run time, 0 before any run.
func (p ProgramCost) PerRun() time.Duration {
	if p.Runs == 0 {
		return 0
	}
	return p.RunTime / time.Duration(p.Runs)
}

// EnableRunTimeStats turns on the kernel's per-program run counts and run times
// (BPF_ENABLE_STATS, Linux 5.8+) until the closer is closed or the process exits,
// whichever comes first: the kernel drops its reference with the descriptor. While on,
// every BPF program on the machine pays two clock reads per run.
func EnableRunTimeStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if errors.Is(err, unix.EPERM) {
		return nil, fmt.Errorf("enable the kernel's BPF run-time statistics: %w (it needs CAP_SYS_ADMIN)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("enable the kernel's BPF run-time statistics (BPF_ENABLE_STATS, Linux 5.8+): %w", err)
	}
	return c, nil
}

// ProgramCosts reads the kernel's counters of every program this tracer loaded, by name.
func (t *Tracer) ProgramCosts() ([]ProgramCost, error) {
	if t.coll == nil {
		return nil, fmt.Errorf("tracer closed")
	}
	var out []ProgramCost
	for name, p := range t.coll.Programs {
		s, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("read the statistics of program %s: %w", name, err)
		}
		out = append(out, ProgramCost{Name: name, Runs: s.RunCount, RunTime: s.Runtime, RecursionMisses: s.RecursionMisses})
	}
	slices.SortFunc(out, func(a, b ProgramCost) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}
