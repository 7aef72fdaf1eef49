package tracer

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace and a file that names it.
type Netns struct {
	Inode uint32
	Path  string // /proc/PID/ns/net or /run/netns/NAME
}

// Namespaces lists every network namespace a process or a /run/netns name holds, among
// those twtrace may open: another user's process's needs CAP_SYS_PTRACE.
func Namespaces() ([]Netns, error) {
	all, _, err := namespaces()
	return all, err
}

// namespaces also counts the processes whose namespace twtrace was not allowed to open.
func namespaces() (_ []Netns, denied int, _ error) {
	seen := map[uint32]Netns{}
	add := func(path string) {
		var st unix.Stat_t
		switch err := unix.Stat(path, &st); {
		case err == unix.EACCES:
			denied++
		case err == nil:
			if _, ok := seen[uint32(st.Ino)]; !ok {
				seen[uint32(st.Ino)] = Netns{Inode: uint32(st.Ino), Path: path}
			}
		}
	}
	// a name outlives the processes in its namespace: a path through a process that has
	// exited since (an `ip netns exec` of a moment) cannot be opened
	named, _ := filepath.Glob("/run/netns/*")
	for _, p := range named {
		add(p)
	}
	procs, err := filepath.Glob("/proc/[0-9]*") // not */ns/net: Glob would skip the ns it may not list
	if err != nil {
		return nil, 0, err
	}
	for _, p := range procs {
		add(p + "/ns/net")
	}
	out := make([]Netns, 0, len(seen))
	for _, ns := range seen {
		out = append(out, ns)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Inode < out[j].Inode })
	return out, denied, nil
}

// FindNetns returns the namespace with this inode.
func FindNetns(inode uint32) (Netns, error) {
	all, denied, err := namespaces()
	if err != nil {
		return Netns{}, err
	}
	for _, ns := range all {
		if ns.Inode == inode {
			return ns, nil
		}
	}
	if denied > 0 {
		return Netns{}, fmt.Errorf("no network namespace with inode %d among those twtrace may open: "+
			"the namespaces of %d processes of other users need CAP_SYS_PTRACE", inode, denied)
	}
	return Netns{}, fmt.Errorf("no network namespace with inode %d (no process or /run/netns name holds it)", inode)
}

// SelfNetns is the namespace twtrace itself runs in.
func SelfNetns() (Netns, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return Netns{}, err
	}
	return Netns{Inode: uint32(st.Ino), Path: "/proc/self/ns/net"}, nil
}

// Do runs f with the calling OS thread inside the namespace: sockets f creates belong to
// it, /proc/sys/net and /proc/thread-self/net show it. The thread returns to its own
// namespace afterwards, or dies if it cannot.
func (ns Netns) Do(f func() error) error {
	target, err := unix.Open(ns.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", ns.Path, err)
	}
	defer unix.Close(target)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(home)
		if sameFile(home, target) { // already there: setns would need CAP_SYS_ADMIN for nothing
			ferr := f()
			runtime.UnlockOSThread()
			errc <- ferr
			return
		}
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			if err == unix.EPERM {
				err = fmt.Errorf("%w: entering another namespace needs CAP_SYS_ADMIN", err)
			}
			errc <- fmt.Errorf("enter network namespace %d: %w", ns.Inode, err)
			return
		}
		ferr := f()
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread() // back home: the thread may serve others again
		}
		errc <- ferr
	}()
	return <-errc
}

func sameFile(a, b int) bool {
	var sa, sb unix.Stat_t
	return unix.Fstat(a, &sa) == nil && unix.Fstat(b, &sb) == nil && sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// readSysctl reads a sysctl of the calling thread's namespace, "" when it does not exist.
func readSysctl(name string) string {
	b, err := os.ReadFile(filepath.Join("/proc/sys", name))
	if err != nil {
		return ""
	}
	return string(trimSpace(b))
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
