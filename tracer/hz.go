package tracer

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// hzValues are the values CONFIG_HZ can take.
var hzValues = []uint32{100, 250, 300, 1000}

// TickRate is the kernel's HZ, which turns every timeout the kernel keeps in jiffies into
// time, and how it was found.
type TickRate struct {
	HZ     uint32
	Source string // the kernel configuration file it was read from, or "measured"
}

// kernelHZ reads CONFIG_HZ from the running kernel's configuration where the system keeps
// one; elsewhere it measures the tick rate.
func kernelHZ(readJiffies *ebpf.Program, jiffies *ebpf.Variable) (TickRate, error) {
	if hz, from, ok := configuredHZ(); ok {
		return TickRate{HZ: hz, Source: from}, nil
	}
	hz, err := measureHZ(readJiffies, jiffies)
	return TickRate{HZ: hz, Source: "measured"}, err
}

// configFiles are where a running kernel's configuration may be read, best first.
func configFiles() []string {
	var u unix.Utsname
	files := []string{"/proc/config.gz"}
	if unix.Uname(&u) == nil {
		files = append(files, "/boot/config-"+unix.ByteSliceToString(u.Release[:]))
	}
	return files
}

// configuredHZ reads CONFIG_HZ from the first kernel configuration file there is.
func configuredHZ() (uint32, string, bool) {
	for _, name := range configFiles() {
		if hz, err := readConfigHZ(name); err == nil {
			return hz, name, true
		}
	}
	return 0, "", false
}

func readConfigHZ(name string) (uint32, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(name, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return 0, err
		}
		r = gz
	}
	return parseConfigHZ(r)
}

// parseConfigHZ finds CONFIG_HZ=N in a kernel configuration, N one of hzValues.
func parseConfigHZ(r io.Reader) (uint32, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			hz, err := strconv.ParseUint(v, 10, 32)
			if err != nil || !slices.Contains(hzValues, uint32(hz)) {
				return 0, fmt.Errorf("CONFIG_HZ=%s is not one of %v", v, hzValues)
			}
			return uint32(hz), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no CONFIG_HZ")
}

// hzSample is jiffies and the monotonic clock, read together in the kernel (struct
// jiffies_sample): a delay between the program and this process cannot skew the rate.
type hzSample struct {
	Jiffies, Ns uint64
}

// hzIntervals and hzInterval: three rates over 100 ms each, 10 jiffies at the slowest HZ.
// The median ignores one interval whose end a stalled tick delayed (seen in loaded VMs).
const (
	hzIntervals = 3
	hzInterval  = 100 * time.Millisecond
)

// measureHZ counts jiffies against the kernel's clock over a few intervals and snaps the
// median rate to the nearest value CONFIG_HZ can take.
func measureHZ(readJiffies *ebpf.Program, jiffies *ebpf.Variable) (uint32, error) {
	sample := func() (hzSample, error) {
		var s hzSample
		if _, err := readJiffies.Run(&ebpf.RunOptions{}); err != nil {
			return s, fmt.Errorf("read jiffies (BPF_PROG_TEST_RUN of a raw tracepoint program, Linux 5.10+): %w", err)
		}
		return s, jiffies.Get(&s)
	}
	prev, err := sample()
	if err != nil {
		return 0, err
	}
	var rates []float64
	for range hzIntervals {
		time.Sleep(hzInterval)
		next, err := sample()
		if err != nil {
			return 0, err
		}
		rates = append(rates, float64(next.Jiffies-prev.Jiffies)/(float64(next.Ns-prev.Ns)/1e9))
		prev = next
	}
	slices.Sort(rates)
	return nearestHZ(rates[len(rates)/2]), nil
}

func nearestHZ(rate float64) uint32 {
	best := uint32(0)
	for _, hz := range hzValues {
		if best == 0 || math.Abs(rate-float64(hz)) < math.Abs(rate-float64(best)) {
			best = hz
		}
	}
	return best
}
