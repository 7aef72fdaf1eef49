package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// bpfObjects are the BPF objects a process holds, read from /proc/PID/fdinfo: exact,
// whatever else runs on the machine.
type bpfObjects struct {
	progs, links, maps []uint32
	mapMemlock         uint64 // bytes the kernel charges for the maps
	perfEvents         int    // tracepoints attached the legacy way hold a perf_event fd
}

func objectsOf(pid int) bpfObjects {
	var o bpfObjects
	seenProg := map[uint32]bool{}
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); target == "anon_inode:[perf_event]" {
			o.perfEvents++
		}
		fields := fdinfo(pid, e.Name())
		switch {
		case fields["link_id"] != "":
			o.links = append(o.links, atou32(fields["link_id"]))
		case fields["map_id"] != "":
			o.maps = append(o.maps, atou32(fields["map_id"]))
			n, _ := strconv.ParseUint(fields["memlock"], 10, 64)
			o.mapMemlock += n
		case fields["prog_id"] != "":
			if id := atou32(fields["prog_id"]); !seenProg[id] {
				seenProg[id] = true
				o.progs = append(o.progs, id)
			}
		}
	}
	return o
}

func fdinfo(pid int, fd string) map[string]string {
	out := map[string]string{}
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "fdinfo", fd))
	if err != nil {
		return out
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func atou32(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
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
