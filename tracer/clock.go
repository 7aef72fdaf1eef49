package tracer

import (
	"time"

	"golang.org/x/sys/unix"
)

// bootWall returns the wall-clock time of CLOCK_MONOTONIC zero, the clock of bpf_ktime_get_ns.
func bootWall() time.Time {
	var ts unix.Timespec
	before := time.Now()
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return before.Add(-time.Duration(ts.Nano()))
}
