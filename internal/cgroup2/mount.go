// Package cgroup2 finds the cgroup v2 hierarchy and maps between cgroup paths and cgroup ids:
// the id the kernel gives eBPF programs (bpf_get_current_cgroup_id, a socket's sk_cgrp_data) is
// the inode number of the cgroup's directory in the cgroup2 filesystem.
package cgroup2

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

// ErrNotMounted: the machine has no cgroup2 filesystem mounted, so cgroup ids cannot be named
// (the kernel still gives every socket the root of its default hierarchy).
var ErrNotMounted = errors.New("no cgroup v2 hierarchy mounted")

// Hierarchy is a mounted cgroup2 filesystem.
type Hierarchy struct {
	// Mount is where it is mounted: /sys/fs/cgroup on pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
	Mount string
	// Root is the cgroup the mount shows at its top: "/" unless a sub-cgroup was bind-mounted; paths
	// under Mount are named Root + their path below Mount, as /proc/PID/cgroup names them.
	Root string
}

// Find reads /proc/self/mountinfo for a cgroup2 mount, preferring one of the whole hierarchy.
func Find() (Hierarchy, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return Hierarchy{}, fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	return FindIn(f)
}

// FindIn is Find on a mountinfo text.
func FindIn(mountinfo io.Reader) (Hierarchy, error) {
	var found []Hierarchy
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// 41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "cgroup2" {
			continue
		}
		h := Hierarchy{Mount: unescape(fields[4]), Root: cleanRoot(unescape(fields[3]))}
		// a later mount on the same point hides the earlier one (a container's own /sys/fs/cgroup
		// under the host's, mounted over it)
		found = slices.DeleteFunc(found, func(f Hierarchy) bool { return f.Mount == h.Mount })
		found = append(found, h)
	}
	if err := sc.Err(); err != nil {
		return Hierarchy{}, fmt.Errorf("read mountinfo: %w", err)
	}
	for _, h := range found {
		if h.Root == "/" {
			return h, nil
		}
	}
	if len(found) > 0 {
		return found[0], nil
	}
	return Hierarchy{}, ErrNotMounted
}

// cleanRoot keeps a mount's root as a cgroup path; a root outside the reader's cgroup namespace
// (shown as /../..) cannot be named from here, so paths are then relative to the mount.
func cleanRoot(root string) string {
	if root == "" || strings.HasPrefix(root, "/..") {
		return "/"
	}
	return path.Clean(root)
}

// unescape undoes mountinfo's octal escapes of space, tab, newline and backslash.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
