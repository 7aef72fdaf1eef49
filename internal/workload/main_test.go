package workload

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/twtrace/twtrace/internal/cgroup2"
	"github.com/twtrace/twtrace/internal/loopback"
)

// childEnv makes this test binary a child process: "listen" waits for a line on stdin, then listens
// on 127.0.0.1 and prints the port, and exits when stdin closes; "listen-netns" first brings up lo
// of the new network namespace it was born in.
const childEnv = "TWTRACE_WORKLOAD_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "listen":
		os.Exit(listenChild())
	case "listen-netns":
		if err := loopback.Up(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(listenChild())
	}
	os.Exit(m.Run())
}

func listenChild() int {
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return 1
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	defer ln.Close()
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	in.ReadString('\n')
	return 0
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Getenv("TWTRACE_UNIT_ONLY") != "" {
		t.Skip("TWTRACE_UNIT_ONLY is set (make test-unit): kernel tests skipped")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups and moves processes into them (run make test as root)")
	}
}

func requireCgroup2(t *testing.T) cgroup2.Hierarchy {
	t.Helper()
	requireRoot(t)
	h, err := cgroup2.Find()
	if err != nil {
		t.Skipf("this machine: %v", err)
	}
	return h
}

// makeCgroup creates the cgroup and its parents under the cgroup2 mount, removed at cleanup.
func makeCgroup(t *testing.T, h cgroup2.Hierarchy, path string) {
	t.Helper()
	dir, err := h.Dir(path)
	if err != nil {
		t.Fatal(err)
	}
	var created []string
	for d := dir; d != h.Mount; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		created = append(created, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range created {
			if err := os.Remove(d); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		}
	})
}

// child is a process of this test binary placed in a cgroup before it opens its socket.
type child struct {
	cmd   *exec.Cmd
	stdin *os.File
	port  uint16
}

// startListener starts a child in the cgroup at path (moved there through cgroup.procs) and, once
// it is there, has it listen; newNetns gives it a network namespace of its own.
func startListener(t *testing.T, h cgroup2.Hierarchy, path string, newNetns bool) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=listen")
	if newNetns {
		cmd.Env = append(os.Environ(), childEnv+"=listen-netns")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = r
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	c := &child{cmd: cmd, stdin: w}
	t.Cleanup(c.stop)
	dir, _ := h.Dir(path)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatalf("move child into %s: %v", path, err)
	}
	if _, err := w.WriteString("go\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	port, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		t.Fatalf("child in %s: %q, %v", path, line, err)
	}
	c.port = uint16(port)
	return c
}

func (c *child) stop() {
	if c.stdin != nil {
		c.stdin.Close()
		c.stdin = nil
		c.cmd.Wait()
	}
}

func (c *child) netns(t *testing.T) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", c.cmd.Process.Pid), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
