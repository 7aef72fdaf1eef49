package tracer

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/internal/loopback"
	"github.com/twtrace/twtrace/internal/snapshot"
	"golang.org/x/sys/unix"
)

// netns is a private network namespace, held by a file descriptor. Do enters it on a
// locked OS thread and leaves it again, so no thread of the test lingers in it: the
// namespace dies when Destroy closes the descriptor and its last socket is closed.
type netns struct {
	inode uint32
	fd    int
}

// hostNetns is the namespace the test process started in, where every thread returns.
var hostNetns = func() int {
	fd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		panic(err)
	}
	return fd
}()

func newNetns(t testing.TB) *netns {
	t.Helper()
	ns := &netns{fd: -1}
	var err error
	onThread(func() {
		if err = unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return
		}
		defer leave()
		if ns.fd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return
		}
		var st unix.Stat_t
		if err = unix.Fstat(ns.fd, &st); err != nil {
			return
		}
		ns.inode = uint32(st.Ino)
		err = loopback.Up()
	})
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(ns.Destroy)
	return ns
}

// leave returns the calling thread to the host namespace: a thread left inside would
// keep the namespace alive.
func leave() {
	if err := unix.Setns(hostNetns, unix.CLONE_NEWNET); err != nil {
		panic(fmt.Sprintf("setns back to the host namespace: %v", err))
	}
}

// onThread runs f on an OS thread locked for it and meant to die afterwards.
func onThread(f func()) {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		defer close(done)
		f()
	}()
	<-done
}

// Do runs f inside the namespace.
func (ns *netns) Do(f func()) {
	onThread(func() {
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("setns: %v", err))
		}
		defer leave()
		f()
	})
}

// Destroy drops the test's hold on the namespace.
func (ns *netns) Destroy() {
	if ns.fd >= 0 {
		unix.Close(ns.fd)
		ns.fd = -1
	}
}

// Sysctl writes a per-namespace sysctl such as "net/ipv4/tcp_max_tw_buckets".
func (ns *netns) Sysctl(t testing.TB, name, value string) {
	t.Helper()
	var err error
	ns.Do(func() { err = os.WriteFile(filepath.Join("/proc/sys", name), []byte(value), 0o644) })
	if err != nil {
		t.Fatalf("sysctl %s=%s: %v", name, value, err)
	}
}

// HasSysctl reports whether this kernel has the sysctl.
func (ns *netns) HasSysctl(name string) bool {
	var err error
	ns.Do(func() { _, err = os.Stat(filepath.Join("/proc/sys", name)) })
	return err == nil
}

// Netstat reads one TcpExt counter of the namespace, as nstat shows it.
func (ns *netns) Netstat(t testing.TB, name string) uint64 {
	t.Helper()
	var c snapshot.Counters
	var err error
	ns.Do(func() { c, err = snapshot.ReadCounters("/proc/thread-self/net") })
	v, ok := c["TcpExt"+name]
	if err != nil || !ok {
		t.Fatalf("netstat %s: %v (counter missing: %v)", name, err, !ok)
	}
	return v
}

// TimeWaitCount counts the namespace's sockets in TIME_WAIT from /proc/net/tcp{,6},
// the table ss reads too.
func (ns *netns) TimeWaitCount(t testing.TB) int {
	t.Helper()
	n := 0
	ns.Do(func() {
		for _, file := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			data, err := os.ReadFile(file)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(data), "\n")[1:] {
				fields := strings.Fields(line)
				if len(fields) > 3 && fields[3] == "06" {
					n++
				}
			}
		}
	})
	return n
}

// SocketIn creates a TCP socket inside the namespace.
func (ns *netns) SocketIn(t testing.TB, family int) int {
	t.Helper()
	var fd int
	var err error
	ns.Do(func() { fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0) })
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	return fd
}
