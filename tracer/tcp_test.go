package tracer

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func loopbackAddr(family int) netip.Addr {
	if family == unix.AF_INET6 {
		return netip.IPv6Loopback()
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

func familyName(family int) string {
	if family == unix.AF_INET6 {
		return "ipv6"
	}
	return "ipv4"
}

func familyNumber(family int) uint8 {
	if family == unix.AF_INET6 {
		return 6
	}
	return 4
}

func sockaddr(a netip.Addr, port uint16) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Addr: a.As4(), Port: int(port)}
	}
	return &unix.SockaddrInet6{Addr: a.As16(), Port: int(port)}
}

func localPort(t testing.TB, fd int) uint16 {
	t.Helper()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(sa.Port)
	case *unix.SockaddrInet6:
		return uint16(sa.Port)
	}
	t.Fatalf("getsockname: unexpected %T", sa)
	return 0
}

func listenIn(t testing.TB, ns *netns, family int) (int, uint16) {
	t.Helper()
	fd := ns.SocketIn(t, family)
	must(t, "setsockopt SO_REUSEADDR", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
	must(t, "bind", unix.Bind(fd, sockaddr(loopbackAddr(family), 0)))
	must(t, "listen", unix.Listen(fd, 128))
	return fd, localPort(t, fd)
}

// connectIn connects from the namespace, from bindPort when it is not 0.
func connectIn(t testing.TB, ns *netns, family int, port, bindPort uint16) (int, uint16) {
	t.Helper()
	fd := ns.SocketIn(t, family)
	// so that a later socket may bind this port while it is in TIME_WAIT
	must(t, "setsockopt SO_REUSEADDR", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
	if bindPort != 0 {
		must(t, "bind", unix.Bind(fd, sockaddr(loopbackAddr(family), bindPort)))
	}
	must(t, "connect", unix.Connect(fd, sockaddr(loopbackAddr(family), port)))
	return fd, localPort(t, fd)
}

func acceptOn(t testing.TB, lfd int) int {
	t.Helper()
	fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	must(t, "accept", err)
	return fd
}

// readEOF reads until the peer's FIN.
func readEOF(t testing.TB, fd int) {
	t.Helper()
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		must(t, "read", err)
		if n == 0 {
			return
		}
	}
}

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// clientCloses makes one connection whose client closes first, and returns the
// client's port once the server has closed too.
func clientCloses(t testing.TB, ns *netns, family int, lfd int, port uint16) uint16 {
	t.Helper()
	cfd, cport := connectIn(t, ns, family, port, 0)
	afd := acceptOn(t, lfd)
	unix.Close(cfd)
	readEOF(t, afd)
	unix.Close(afd)
	return cport
}

// serverCloses makes one connection whose server closes first, and returns the
// client's port once the client has closed too.
func serverCloses(t testing.TB, ns *netns, family int, lfd int, port uint16) uint16 {
	t.Helper()
	cfd, cport := connectIn(t, ns, family, port, 0)
	afd := acceptOn(t, lfd)
	unix.Close(afd)
	readEOF(t, cfd)
	unix.Close(cfd)
	return cport
}

// The child process role: a client that owns its socket in another process.
const childEnv = "TWTRACE_TEST_CHILD"

// startChildClient starts this test binary as a client connecting from the
// namespace to port; it closes when told to, and exits.
func startChildClient(t testing.TB, ns *netns, family int, port uint16) (pid int, cport uint16, closeIt func()) {
	t.Helper()
	var cmd *exec.Cmd
	var err error
	var stdin *os.File
	var out *bufio.Reader
	ns.Do(func() {
		// started from the namespace's thread, so the child is born in the namespace
		cmd = exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=connect %d %d", childEnv, family, port))
		var w *os.File
		stdin, w, err = os.Pipe()
		if err != nil {
			return
		}
		cmd.Stdin = stdin
		stdin = w
		pipe, perr := cmd.StdoutPipe()
		if perr != nil {
			err = perr
			return
		}
		out = bufio.NewReader(pipe)
		cmd.Stderr = os.Stderr
		err = cmd.Start()
	})
	must(t, "start child", err)
	line, err := out.ReadString('\n')
	must(t, "read child's port", err)
	p, err := strconv.Atoi(strings.TrimSpace(line))
	must(t, "parse child's port", err)
	return cmd.Process.Pid, uint16(p), func() {
		stdin.Close()
		must(t, "child exit", cmd.Wait())
	}
}

// startChildHolder starts this test binary in the namespace to hold n sockets (n/2
// connected pairs and a listener) until the returned function releases them.
func startChildHolder(t testing.TB, ns *netns, n int) func() {
	t.Helper()
	var cmd *exec.Cmd
	var stdin io.WriteCloser
	var out io.Reader
	var err error
	ns.Do(func() {
		cmd = exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=hold %d", childEnv, n))
		cmd.Stderr = os.Stderr
		if stdin, err = cmd.StdinPipe(); err != nil {
			return
		}
		if out, err = cmd.StdoutPipe(); err != nil {
			return
		}
		err = cmd.Start()
	})
	must(t, "start holder", err)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("holder of %d sockets: %q %v", n, line, err)
	}
	return func() {
		stdin.Close()
		cmd.Wait()
	}
}

// holdSockets makes n/2 connected loopback pairs and a listener, then waits for stdin to close.
func holdSockets(n int) int {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err == nil {
		err = unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	}
	if err == nil {
		err = unix.Listen(ln, 4096)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "holder:", err)
		return 1
	}
	sa, _ := unix.Getsockname(ln)
	port := sa.(*unix.SockaddrInet4).Port
	for i := 0; i < n/2; i++ {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err == nil {
			err = unix.Connect(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port})
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

func runChild(role string) int {
	var n int
	if _, err := fmt.Sscanf(role, "hold %d", &n); err == nil {
		return holdSockets(n)
	}
	if _, err := fmt.Sscanf(role, "panic-reader %d", &n); err == nil {
		return panicReader(uint32(n))
	}
	var family, port int
	if _, err := fmt.Sscanf(role, "connect %d %d", &family, &port); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM, 0)
	if err == nil {
		err = unix.Connect(fd, sockaddr(loopbackAddr(family), uint16(port)))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	sa, _ := unix.Getsockname(fd)
	lp := 0
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		lp = sa.Port
	case *unix.SockaddrInet6:
		lp = sa.Port
	}
	fmt.Println(lp)
	buf := make([]byte, 1)
	unix.Read(0, buf) // until the parent closes our stdin
	unix.Close(fd)
	return 0
}

func mustPrefix(s string) netip.Prefix {
	return netip.MustParsePrefix(s)
}
