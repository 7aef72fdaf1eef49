package churn

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twtrace/twtrace/internal/loopback"
	"golang.org/x/sys/unix"
)

// Netns is a private network namespace, with loopback up, held by a descriptor: it
// disappears, and the TIME_WAIT sockets a run left in it with it, once Close drops the
// hold and the run's threads have died.
type Netns struct {
	Inode uint64
	fd    int
}

// NewNetns creates the namespace (CAP_SYS_ADMIN) on a thread that dies afterwards.
func NewNetns() (*Netns, error) {
	ns := &Netns{fd: -1}
	var err error
	onThread(func() {
		if err = unix.Unshare(unix.CLONE_NEWNET); err != nil {
			err = fmt.Errorf("create a network namespace: %w", err)
			return
		}
		if ns.fd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return
		}
		var st unix.Stat_t
		if err = unix.Fstat(ns.fd, &st); err != nil {
			return
		}
		ns.Inode = st.Ino
		err = loopback.Up()
	})
	if err != nil {
		ns.Close()
		return nil, err
	}
	return ns, nil
}

// Run churns inside the namespace: every client and server thread enters it first.
func (ns *Netns) Run(cfg Config) (Result, error) {
	return run(cfg, func() error {
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter network namespace %d: %w", ns.Inode, err)
		}
		return nil
	})
}

// Close drops the hold on the namespace. It is safe to call more than once.
func (ns *Netns) Close() error {
	if ns.fd < 0 {
		return nil
	}
	err := unix.Close(ns.fd)
	ns.fd = -1
	return err
}

// tcpTimeWait is TCP_TIME_WAIT as /proc/net/tcp prints a socket's state.
const tcpTimeWait = "06"

// AwaitQuiet waits until every TCP socket in the namespace is in TIME_WAIT, so every
// transition a run's connections will make before their TIME_WAIT ends has been made (the
// last ones may run in a softirq after the run returns), or timeout passes.
//
// A socket shows TIME_WAIT a moment before its own last transition: tcp_time_wait hashes
// the timewait socket, then tcp_done moves the full one to CLOSE. After the run's system
// calls returned, that happens in a softirq, which an RCU grace period outlasts.
func (ns *Netns) AwaitQuiet(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, busy, err := ns.sockets()
		if err != nil {
			return err
		}
		if busy == 0 {
			return awaitSoftirqs()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("network namespace %d: %d TCP sockets not yet in TIME_WAIT after %s", ns.Inode, busy, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// sockets counts the namespace's TCP sockets, IPv4 and IPv6, in TIME_WAIT and in any
// other state.
func (ns *Netns) sockets() (timeWait, busy int, err error) {
	onThread(func() {
		if err = unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			return
		}
		for _, table := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			var b []byte
			if b, err = os.ReadFile(table); err != nil {
				return
			}
			lines := strings.Split(string(b), "\n")
			for _, line := range lines[1:] { // a header, then "sl local rem st ..."
				switch f := strings.Fields(line); {
				case len(f) <= 3:
				case f[3] == tcpTimeWait:
					timeWait++
				default:
					busy++
				}
			}
		}
	})
	return timeWait, busy, err
}

// membarrierCmdGlobal is MEMBARRIER_CMD_GLOBAL (linux/membarrier.h, 4.16+): the kernel
// answers it with synchronize_rcu(), which waits out every softirq running when it began.
const membarrierCmdGlobal = 1

// softirqGrace stands in for the grace period where the kernel refuses membarrier (before
// 4.16; with nohz_full CPUs): a softirq finishes its work far sooner.
const softirqGrace = 10 * time.Millisecond

// awaitSoftirqs returns once every softirq running when it was called has finished.
func awaitSoftirqs() error {
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); errno != 0 {
		time.Sleep(softirqGrace)
	}
	return nil
}
