package tracer

import (
	"math"
	"time"

	"golang.org/x/sys/unix"
)

// bootWall returns the wall-clock time of CLOCK_MONOTONIC zero, the clock of bpf_ktime_get_ns.
func bootWall() time.Time {
	// A reading between two of the kernel's clock: the pair the least time apart, so a
	// thread preempted between the reads (hundreds of microseconds on a loaded machine)
	// does not shift every event's time, and the lifetimes reconciliation bounds with it.
	var at time.Time
	best := time.Duration(math.MaxInt64)
	for range 16 {
		var a, b unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &a)
		now := time.Now()
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &b)
		if gap := time.Duration(b.Nano() - a.Nano()); gap < best {
			best, at = gap, now.Add(-time.Duration(a.Nano()+int64(gap)/2))
		}
	}
	return at
}
