// Package bpfobj lists the BPF objects a process holds, from /proc/PID/fdinfo, and says
// which of them are still in the kernel. IDs are not reused soon, so both answers are
// exact whatever else runs on the machine.
package bpfobj

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Held is what one process holds.
type Held struct {
	Progs, Links, Maps []uint32
	MapMemlock         uint64 // bytes the kernel charges for the maps
	PerfEvents         int    // tracepoints attached the legacy way hold a perf_event fd
}

// Of reads the objects process pid holds. A descriptor closed meanwhile is skipped.
func Of(pid int) (Held, error) {
	var h Held
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return h, fmt.Errorf("list the descriptors of process %d: %w", pid, err)
	}
	progs, links, maps := map[uint32]bool{}, map[uint32]bool{}, map[uint32]bool{}
	for _, e := range entries {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); target == "anon_inode:[perf_event]" {
			h.PerfEvents++
		}
		fields := fdinfo(pid, e.Name())
		switch {
		case fields["link_id"] != "": // a link's fdinfo names its program too
			links[atou32(fields["link_id"])] = true
			progs[atou32(fields["prog_id"])] = true
		case fields["map_id"] != "":
			maps[atou32(fields["map_id"])] = true
			n, _ := strconv.ParseUint(fields["memlock"], 10, 64)
			h.MapMemlock += n
		case fields["prog_id"] != "":
			progs[atou32(fields["prog_id"])] = true
		}
	}
	delete(progs, 0)
	h.Progs, h.Links, h.Maps = sorted(progs), sorted(links), sorted(maps)
	return h, nil
}

// StillLoaded names the objects that are still in the kernel.
func (h Held) StillLoaded() []string {
	var left []string
	check := func(kind string, id uint32, open func() (interface{ Close() error }, error)) {
		obj, err := open()
		switch {
		case err == nil:
			obj.Close()
			left = append(left, fmt.Sprintf("%s %d", kind, id))
		case !errors.Is(err, os.ErrNotExist):
			left = append(left, fmt.Sprintf("%s %d (%v)", kind, id, err))
		}
	}
	for _, id := range h.Progs {
		check("program", id, func() (interface{ Close() error }, error) { return ebpf.NewProgramFromID(ebpf.ProgramID(id)) })
	}
	for _, id := range h.Links {
		check("link", id, func() (interface{ Close() error }, error) { return link.NewFromID(link.ID(id)) })
	}
	for _, id := range h.Maps {
		check("map", id, func() (interface{ Close() error }, error) { return ebpf.NewMapFromID(ebpf.MapID(id)) })
	}
	return left
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
		if k, v, ok := strings.Cut(s.Text(), ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func atou32(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}

func sorted(set map[uint32]bool) []uint32 {
	out := make([]uint32, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// WaitReleased polls until every object is gone from the kernel (programs and links go
// at once, maps after an RCU grace period) or timeout passes, and returns what is left.
func (h Held) WaitReleased(timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		left := h.StillLoaded()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}
