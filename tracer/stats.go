package tracer

import "fmt"

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
	// RecordNoRoom counts sockets left without a record (record tables only): their bucket
	// was full of live ones, so their owner or timewait lifetime is reported unknown.
	RecordNoRoom uint64
	// RecordStale counts records taken over from sockets whose end was never seen (a run
	// the kernel skipped): each is one such socket.
	RecordStale uint64
	// Missed counts hook firings the kernel did not run a program for, because the same
	// program was already running on that CPU (a softirq interrupting it): those events
	// never existed. Linux 5.12+ reports it (bpf_prog_info.recursion_misses).
	Missed  uint64
	Decoded uint64 // records decoded in userspace
	Corrupt uint64 // records userspace could not decode
}

// statFields says where each of the kernel's counters (enum stat_index) goes.
var statFields = [...]func(*Stats) *uint64{
	twtraceStatIndexSTAT_EMITTED:               func(s *Stats) *uint64 { return &s.Emitted },
	twtraceStatIndexSTAT_LOST:                  func(s *Stats) *uint64 { return &s.Lost },
	twtraceStatIndexSTAT_FILTERED:              func(s *Stats) *uint64 { return &s.Filtered },
	twtraceStatIndexSTAT_SOCK_UNTRACKED:        func(s *Stats) *uint64 { return &s.SockUntracked },
	twtraceStatIndexSTAT_TW_UNKNOWN_BIRTH:      func(s *Stats) *uint64 { return &s.TWUnknownBirth },
	twtraceStatIndexSTAT_OVERFLOW_UNATTRIBUTED: func(s *Stats) *uint64 { return &s.OverflowUnattributed },
	twtraceStatIndexSTAT_OVERFLOW_INFERRED:     func(s *Stats) *uint64 { return &s.OverflowInferred },
	twtraceStatIndexSTAT_RECORD_NO_ROOM:        func(s *Stats) *uint64 { return &s.RecordNoRoom },
	twtraceStatIndexSTAT_RECORD_STALE:          func(s *Stats) *uint64 { return &s.RecordStale },
}

// Stats reads the kernel's per-CPU counters and userspace's own.
func (t *Tracer) Stats() (Stats, error) {
	s := Stats{Decoded: t.decoded.Load(), Corrupt: t.corrupt.Load()}
	if t.coll == nil {
		return s, fmt.Errorf("tracer closed")
	}
	for idx, field := range statFields {
		var perCPU []uint64
		if err := t.coll.Maps[twtraceMapStats].Lookup(uint32(idx), &perCPU); err != nil {
			return s, fmt.Errorf("read stats: %w", err)
		}
		sum := field(&s)
		for _, v := range perCPU {
			*sum += v
		}
		if twtraceStatIndex(idx) == twtraceStatIndexSTAT_LOST {
			s.LostPerCPU = perCPU
		}
	}
	for _, p := range t.coll.Programs {
		if ps, err := p.Stats(); err == nil {
			s.Missed += ps.RecursionMisses
		}
	}
	return s, nil
}
