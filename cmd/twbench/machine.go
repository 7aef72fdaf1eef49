package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// machine describes where the figures were measured.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := statusLine("/proc/meminfo", "MemTotal")
	var u unix.Utsname
	unix.Uname(&u)
	return fmt.Sprintf("%d CPUs (%s), %s memory, Linux %s, %s; measured %s",
		runtime.NumCPU(), model, mem, unix.ByteSliceToString(u.Release[:]), runtime.Version(),
		time.Now().UTC().Format("2006-01-02 15:04 UTC"))
}

func statusLine(path, key string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			var kb uint64
			fmt.Sscan(v, &kb)
			return fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}
