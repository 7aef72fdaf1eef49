package cgroup2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// fileidKernfs is FILEID_KERNFS (include/linux/exportfs.h): a kernfs file handle is the node's
// 64-bit id, which for a cgroup is its cgroup id.
const fileidKernfs = 0xfe

// ErrNoCgroup: no cgroup has this id (any more).
var ErrNoCgroup = errors.New("no such cgroup")

// PathOf finds the cgroup path of id directly, through the kernel's file handle for it
// (open_by_handle_at, which needs CAP_DAC_READ_SEARCH): one system call where Walk reads the
// whole tree. unix.EPERM says the capability is missing.
func (h Hierarchy) PathOf(id uint64) (string, error) {
	mount, err := unix.Open(h.Mount, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(mount)
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], id)
	fd, err := unix.OpenByHandleAt(mount, unix.NewFileHandle(fileidKernfs, b[:]), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOENT) {
		return "", fmt.Errorf("cgroup %d: %w", id, ErrNoCgroup)
	}
	if err != nil {
		return "", fmt.Errorf("open cgroup %d by handle: %w", id, err)
	}
	defer unix.Close(fd)
	dir, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	return h.Path(dir)
}

// IsCgroupfs says whether the mount is a cgroup2 filesystem (not a stand-in directory).
func (h Hierarchy) IsCgroupfs() bool {
	var st unix.Statfs_t
	return unix.Statfs(h.Mount, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}
