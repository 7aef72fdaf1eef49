package cgroup2

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Dir is the directory of the cgroup named by a cgroup path ("/kubepods/pod1/abc", as /proc/PID/cgroup shows it).
func (h Hierarchy) Dir(cgroupPath string) (string, error) {
	p := path.Clean("/" + cgroupPath)
	rel, ok := strings.CutPrefix(p, h.Root)
	if h.Root == "/" {
		rel, ok = p, true
	}
	if !ok || (rel != "" && rel[0] != '/') {
		return "", fmt.Errorf("cgroup %s is outside the cgroup2 mount at %s (its root is %s)", cgroupPath, h.Mount, h.Root)
	}
	return filepath.Join(h.Mount, rel), nil
}

// Path names a directory under the mount by its cgroup path.
func (h Hierarchy) Path(dir string) (string, error) {
	rel, err := filepath.Rel(h.Mount, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s is not under the cgroup2 mount at %s", dir, h.Mount)
	}
	if rel == "." {
		return h.Root, nil
	}
	return path.Join(h.Root, filepath.ToSlash(rel)), nil
}

// Lookup returns the cgroup path and id of PATH, which is either a cgroup path as /proc/PID/cgroup shows it
// (/kubepods.slice/…, /system.slice/nginx.service) or a directory under the cgroup2 mount
// (/sys/fs/cgroup/unified/system.slice/nginx.service).
func (h Hierarchy) Lookup(p string) (cgroupPath string, id uint64, err error) {
	dir := filepath.Clean(p)
	if dir == h.Mount || strings.HasPrefix(dir, h.Mount+"/") {
		if cgroupPath, err = h.Path(dir); err != nil {
			return "", 0, err
		}
	} else {
		cgroupPath = path.Clean("/" + p)
		if dir, err = h.Dir(cgroupPath); err != nil {
			return "", 0, err
		}
	}
	id, err = dirID(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", 0, fmt.Errorf("no cgroup %s in the cgroup2 hierarchy mounted at %s", cgroupPath, h.Mount)
	}
	if err != nil {
		return "", 0, err
	}
	return cgroupPath, id, nil
}

// Walk calls fn with the cgroup path and id of every cgroup of the hierarchy, parents first. Cgroups removed
// while it walks are skipped. It reads each directory's entries raw (getdents64): an entry's type and inode
// come with its name, so no cgroup needs a stat, and the many files of each cgroup cost no allocation.
func (h Hierarchy) Walk(fn func(cgroupPath string, id uint64)) error {
	id, err := dirID(h.Mount)
	if err != nil {
		return err
	}
	fn(h.Root, id)
	buf := make([]byte, 32<<10)
	return walkDir(h.Mount, h.Root, buf, fn)
}

func walkDir(dir, cgroupPath string, buf []byte, fn func(string, uint64)) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // removed meanwhile
		}
		return fmt.Errorf("open %s: %w", dir, err)
	}
	type child struct {
		name string
		id   uint64
	}
	var children []child
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("read %s: %w", dir, err)
		}
		if n <= 0 {
			break
		}
		// struct linux_dirent64: d_ino u64, d_off s64, d_reclen u16, d_type u8, d_name
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			if b[18] == unix.DT_DIR {
				name := b[19:reclen]
				if i := bytes.IndexByte(name, 0); i >= 0 {
					name = name[:i]
				}
				if s := string(name); s != "." && s != ".." {
					children = append(children, child{s, binary.NativeEndian.Uint64(b[0:8])})
				}
			}
			b = b[reclen:]
		}
	}
	unix.Close(fd)
	for _, c := range children {
		p := path.Join(cgroupPath, c.name)
		fn(p, c.id)
		if err := walkDir(filepath.Join(dir, c.name), p, buf, fn); err != nil {
			return err
		}
	}
	return nil
}

// Procs lists the processes in exactly this cgroup (not its descendants).
func (h Hierarchy) Procs(cgroupPath string) ([]int, error) {
	dir, err := h.Dir(cgroupPath)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range bytes.Fields(b) {
		if pid, err := strconv.Atoi(string(f)); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// ProcessPath is the cgroup v2 path of a process, from the "0::" line of /proc/PID/cgroup.
func ProcessPath(pid int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("process %d: %w", pid, ErrNotMounted)
}

func dirID(dir string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return 0, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return 0, fmt.Errorf("%s is not a cgroup directory", dir)
	}
	return st.Ino, nil
}

// Level is a cgroup's depth below the root (the root is 0), as the kernel counts it in
// cgroup->level when the path is the whole path from the hierarchy's root.
func Level(cgroupPath string) int {
	p := strings.Trim(path.Clean("/"+cgroupPath), "/")
	if p == "" {
		return 0
	}
	return strings.Count(p, "/") + 1
}
