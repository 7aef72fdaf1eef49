package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

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
