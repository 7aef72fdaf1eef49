package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/twtrace/twtrace/internal/bpfobj"
)

// objectsOf reads the BPF objects a process holds; a process already gone holds none.
func objectsOf(pid int) bpfobj.Held {
	h, _ := bpfobj.Of(pid)
	return h
}

// statusKB reads a "VmRSS"-style line of /proc/PID/status, in KiB.
func statusKB(pid int, key string) uint64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// cpuTime is the time process pid has spent on the CPUs so far, in user and kernel mode.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	// fields 14 and 15 of stat, utime and stime, in clock ticks (USER_HZ, 100 on Linux)
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
