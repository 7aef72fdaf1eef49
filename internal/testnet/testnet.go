// Package testnet gives tests a private network namespace with loopback up, and the
// loopback connections they drive in it. Tests only.
package testnet

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/internal/loopback"
	"golang.org/x/sys/unix"
)

// Netns is a private network namespace held by a file descriptor. Do enters it on a
// thread that dies afterwards, so no thread lingers in it: the namespace dies when the
// test ends and its last socket is closed.
type Netns struct {
	Inode uint32
	fd    int
}

// New creates a namespace with loopback up; the test's cleanup releases it.
func New(tb testing.TB) *Netns {
	tb.Helper()
	ns := &Netns{fd: -1}
	var err error
	onThread(func() {
		if err = unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return
		}
		if ns.fd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return
		}
		var st unix.Stat_t
		if err = unix.Fstat(ns.fd, &st); err != nil {
			return
		}
		ns.Inode = uint32(st.Ino)
		err = loopback.Up()
	})
	if err != nil {
		tb.Fatalf("create network namespace: %v", err)
	}
	tb.Cleanup(ns.Release)
	return ns
}

// onThread runs f on an OS thread locked for it, which exits with the goroutine.
func onThread(f func()) {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread may be left inside a namespace
		defer close(done)
		f()
	}()
	<-done
}

// Path is a file that opens the namespace while the test holds it.
func (ns *Netns) Path() string { return "/proc/self/fd/" + strconv.Itoa(ns.fd) }

// Do runs f inside the namespace.
func (ns *Netns) Do(f func()) {
	onThread(func() {
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("setns: %v", err))
		}
		f()
	})
}

// Release drops the test's hold on the namespace.
func (ns *Netns) Release() {
	if ns.fd >= 0 {
		unix.Close(ns.fd)
		ns.fd = -1
	}
}

// Sysctl writes a per-namespace sysctl such as "net/ipv4/tcp_max_tw_buckets".
func (ns *Netns) Sysctl(tb testing.TB, name, value string) {
	tb.Helper()
	var err error
	ns.Do(func() { err = os.WriteFile(filepath.Join("/proc/sys", name), []byte(value), 0o644) })
	if err != nil {
		tb.Fatalf("sysctl %s=%s: %v", name, value, err)
	}
}

// Socket creates a TCP socket inside the namespace.
func (ns *Netns) Socket(tb testing.TB, family int) int {
	tb.Helper()
	var fd int
	var err error
	ns.Do(func() { fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0) })
	if err != nil {
		tb.Fatalf("socket: %v", err)
	}
	return fd
}

// Loopback is the family's loopback address.
func Loopback(family int) unix.Sockaddr {
	if family == unix.AF_INET6 {
		return &unix.SockaddrInet6{Addr: [16]byte{15: 1}}
	}
	return &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
}

func withPort(sa unix.Sockaddr, port int) unix.Sockaddr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		c := *sa
		c.Port = port
		return &c
	case *unix.SockaddrInet6:
		c := *sa
		c.Port = port
		return &c
	}
	return sa
}

// LocalPort is the socket's local port.
func LocalPort(tb testing.TB, fd int) uint16 {
	tb.Helper()
	sa, err := unix.Getsockname(fd)
	must(tb, "getsockname", err)
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(sa.Port)
	case *unix.SockaddrInet6:
		return uint16(sa.Port)
	}
	tb.Fatalf("getsockname: unexpected %T", sa)
	return 0
}

// Listen listens on the family's loopback address, on a port the kernel picks.
func (ns *Netns) Listen(tb testing.TB, family int) (fd int, port uint16) {
	tb.Helper()
	fd = ns.Socket(tb, family)
	must(tb, "setsockopt SO_REUSEADDR", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
	must(tb, "bind", unix.Bind(fd, Loopback(family)))
	must(tb, "listen", unix.Listen(fd, 4096))
	return fd, LocalPort(tb, fd)
}

// Connect connects from the namespace to port on loopback.
func (ns *Netns) Connect(tb testing.TB, family int, port uint16) int {
	tb.Helper()
	fd := ns.Socket(tb, family)
	must(tb, "connect", unix.Connect(fd, withPort(Loopback(family), int(port))))
	return fd
}

// Accept takes one connection from a listener.
func Accept(tb testing.TB, lfd int) int {
	tb.Helper()
	fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	must(tb, "accept", err)
	return fd
}

// ClientCloses makes one connection to the listener whose client closes first, so the
// client's side ends in TIME_WAIT, and returns the client's port once the server has
// closed too.
func (ns *Netns) ClientCloses(tb testing.TB, family, lfd int, port uint16) uint16 {
	tb.Helper()
	c := ns.Connect(tb, family, port)
	cport := LocalPort(tb, c)
	a := Accept(tb, lfd)
	unix.Close(c)
	buf := make([]byte, 16)
	for {
		n, err := unix.Read(a, buf)
		must(tb, "read", err)
		if n == 0 {
			break
		}
	}
	unix.Close(a)
	return cport
}

func must(tb testing.TB, what string, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

// childEnv names the role a test binary started by HoldSockets plays.
const childEnv = "TWTRACE_TESTNET_CHILD"

// RunChild plays the role this process was started for, if any, and exits: call it first
// in TestMain of a package whose tests use HoldSockets.
func RunChild() {
	role := os.Getenv(childEnv)
	if role == "" {
		return
	}
	n, err := strconv.Atoi(strings.TrimPrefix(role, "hold "))
	if err != nil {
		fmt.Fprintln(os.Stderr, "testnet child:", role)
		os.Exit(2)
	}
	os.Exit(holdSockets(n))
}

// HoldSockets starts this test binary in the namespace to hold n sockets (n/2 connected
// IPv4 pairs and a listener), beyond this process's RLIMIT_NOFILE, until the returned
// function releases them.
func (ns *Netns) HoldSockets(tb testing.TB, n int) func() {
	tb.Helper()
	var cmd *exec.Cmd
	var out *bufio.Reader
	var stdin *os.File
	var err error
	ns.Do(func() { // started from the namespace's thread, so the child is born in the namespace
		cmd = exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=hold %d", childEnv, n))
		cmd.Stderr = os.Stderr
		var r *os.File
		if r, stdin, err = os.Pipe(); err != nil {
			return
		}
		cmd.Stdin = r
		pipe, perr := cmd.StdoutPipe()
		if perr != nil {
			err = perr
			return
		}
		out = bufio.NewReader(pipe)
		err = cmd.Start()
		r.Close()
	})
	must(tb, "start holder", err)
	if line, err := out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		tb.Fatalf("holder of %d sockets: %q %v", n, line, err)
	}
	return func() {
		stdin.Close()
		cmd.Wait()
	}
}

func holdSockets(n int) int {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err == nil {
		err = unix.Bind(ln, Loopback(unix.AF_INET))
	}
	if err == nil {
		err = unix.Listen(ln, 4096)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "holder:", err)
		return 1
	}
	sa, _ := unix.Getsockname(ln)
	for i := 0; i < n/2; i++ {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err == nil {
			err = unix.Connect(c, sa)
		}
		if err == nil {
			_, _, err = unix.Accept(ln)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "holder: pair %d: %v\n", i, err)
			return 1
		}
	}
	fmt.Println("ready")
	unix.Read(0, make([]byte, 1))
	return 0
}

// FileLimit is this process's hard RLIMIT_NOFILE.
func FileLimit(tb testing.TB) int {
	var lim unix.Rlimit
	must(tb, "getrlimit", unix.Getrlimit(unix.RLIMIT_NOFILE, &lim))
	return int(lim.Max)
}

// HoldBPFStats makes the test the only one, in any package or process, that turns the
// kernel's BPF statistics on or checks that they are off, until it ends: go test runs
// packages in parallel, and one package's measurement would fail another's "off again
// after exit" check.
func HoldBPFStats(tb testing.TB) {
	tb.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "twtrace-test-bpf-stats.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		tb.Fatalf("open the BPF statistics lock: %v", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		tb.Fatalf("take the BPF statistics lock: %v", err)
	}
	tb.Cleanup(func() { f.Close() }) // closing releases the lock
}
