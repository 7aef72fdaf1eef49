package tracer

import (
	"fmt"
	"math"
	"time"

	"github.com/cilium/ebpf"
)

// measureHZ counts kernel jiffies across a known interval and rounds to the
// nearest value CONFIG_HZ can take.
func measureHZ(readJiffies *ebpf.Program) (uint32, error) {
	sample := func() (uint32, time.Time, error) {
		ret, err := readJiffies.Run(&ebpf.RunOptions{})
		return ret, time.Now(), err
	}
	j0, t0, err := sample()
	if err != nil {
		return 0, fmt.Errorf("read jiffies (BPF_PROG_TEST_RUN of a raw tracepoint program, Linux 5.10+): %w", err)
	}
	time.Sleep(120 * time.Millisecond)
	j1, t1, err := sample()
	if err != nil {
		return 0, fmt.Errorf("read jiffies: %w", err)
	}
	return nearestHZ(float64(j1-j0) / t1.Sub(t0).Seconds()), nil
}

func nearestHZ(rate float64) uint32 {
	best := uint32(0)
	for _, hz := range []uint32{100, 250, 300, 1000} {
		if best == 0 || math.Abs(rate-float64(hz)) < math.Abs(rate-float64(best)) {
			best = hz
		}
	}
	return best
}
