// Package netns names network namespaces by inode, finds a file that opens each, and runs
// code inside one.
package netns

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace and a file that names it.
type Netns struct {
	Inode uint32
	Path  string // /proc/PID/ns/net, /run/netns/NAME, or any file that opens it
}

// ErrStale says a file no longer names the namespace it did: its process exited, or its
// pid was reused.
var ErrStale = errors.New("the namespace's file names another namespace now")

// Self is the namespace twtrace itself runs in.
func Self() (Netns, error) {
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
	var st unix.Stat_t
	if err := unix.Fstat(target, &st); err != nil || uint32(st.Ino) != ns.Inode {
		return fmt.Errorf("open network namespace %d: %w", ns.Inode, ErrStale)
	}
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
