package tracer

import "fmt"

// BPF_F_TEST_RUN_ON_CPU from include/uapi/linux/bpf.h.
const bpfFTestRunOnCPU = 1 << 1

// Stats are the counters that prove nothing was lost silently.
type Stats struct {
	Emitted        uint64   // records written by the kernel
	Lost           uint64   // records the kernel could not write: ring buffer full
	LostPerCPU     []uint64 //
	Filtered       uint64   // events dropped in the kernel by the filters
	SockUntracked  uint64   // transitions of sockets first seen mid-life (in_old unknown)
	TWUnknownBirth uint64   // timewait deaths whose birth was not seen (lifetime unknown)
	// OverflowUnattributed counts overflows the kernel counted (tracepoint backend: on a
	// CPU, in a traced namespace) at closes twtrace did not see, so reported no event for.
	OverflowUnattributed uint64
	// OverflowInferred counts closes the tracepoint backend judged from the timewait
	// table's fill level, which can be wrong, for want of the kernel's count on that CPU.
	OverflowInferred uint64
	// Missed counts hook firings the kernel did not run a program for, because the same
	// program was already running on that CPU (a softirq interrupting it): those events
	// never existed. Linux 5.12+ reports it (bpf_prog_info.recursion_misses).
	Missed  uint64
	Decoded uint64 // records decoded in userspace
	Corrupt uint64 // records userspace could not decode
}

// Stats reads the kernel's per-CPU counters and userspace's own.
func (t *Tracer) Stats() (Stats, error) {
	s := Stats{Decoded: t.decoded.Load(), Corrupt: t.corrupt.Load()}
	if t.coll == nil {
		return s, fmt.Errorf("tracer closed")
	}
	read := func(idx twtraceStatIndex) ([]uint64, uint64, error) {
		var perCPU []uint64
		if err := t.coll.Maps["stats"].Lookup(uint32(idx), &perCPU); err != nil {
			return nil, 0, fmt.Errorf("read stats: %w", err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		return perCPU, sum, nil
	}
	var err error
	if _, s.Emitted, err = read(twtraceStatIndexSTAT_EMITTED); err != nil {
		return s, err
	}
	if s.LostPerCPU, s.Lost, err = read(twtraceStatIndexSTAT_LOST); err != nil {
		return s, err
	}
	if _, s.Filtered, err = read(twtraceStatIndexSTAT_FILTERED); err != nil {
		return s, err
	}
	if _, s.SockUntracked, err = read(twtraceStatIndexSTAT_SOCK_UNTRACKED); err != nil {
		return s, err
	}
	if _, s.TWUnknownBirth, err = read(twtraceStatIndexSTAT_TW_UNKNOWN_BIRTH); err != nil {
		return s, err
	}
	if _, s.OverflowUnattributed, err = read(twtraceStatIndexSTAT_OVERFLOW_UNATTRIBUTED); err != nil {
		return s, err
	}
	if _, s.OverflowInferred, err = read(twtraceStatIndexSTAT_OVERFLOW_INFERRED); err != nil {
		return s, err
	}
	for _, p := range t.coll.Programs {
		if ps, err := p.Stats(); err == nil {
			s.Missed += ps.RecursionMisses
		}
	}
	return s, nil
}
