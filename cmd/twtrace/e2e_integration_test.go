package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inNetns runs f on a throwaway thread inside a new network namespace with loopback up.
func inNetns(t *testing.T, f func(inode uint64)) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread and its namespace die with the goroutine
		finished := false
		defer func() {
			if !finished { // f failed the test and ended this goroutine
				errc <- nil
			}
		}()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			errc <- fmt.Errorf("ip link set lo up: %v %s", err, out)
			return
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			errc <- err
			return
		}
		f(st.Ino)
		finished = true
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// The built binary streams JSON lines that parse and tell a connection's whole story.
func TestWatchJSONEndToEnd(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2 or busybox) to bring up loopback")
	}
	var stdout bytes.Buffer
	var cmd *exec.Cmd
	var stderr *stderrWatch
	inNetns(t, func(inode uint64) {
		cmd = exec.Command(twtraceBin, "watch", "-o", "json", "--duration", "20s", "--backend", *testBackend,
			"--netns", fmt.Sprint(inode))
		cmd.Stdout = &stdout
		pipe, err := cmd.StderrPipe()
		must(t, err)
		stderr = watchStderr(pipe)
		if err := cmd.Start(); err != nil {
			t.Errorf("start twtrace: %v", err)
			return
		}
		if !stderr.waitFor(" tracing ", 60*time.Second) {
			t.Errorf("twtrace never said it was tracing:\n%s", stderr.String())
			return
		}
		ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		must(t, err)
		must(t, unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
		must(t, unix.Listen(ln, 8))
		sa, _ := unix.Getsockname(ln)
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		must(t, err)
		must(t, unix.Connect(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: sa.(*unix.SockaddrInet4).Port}))
		a, _, err := unix.Accept(ln)
		must(t, err)
		unix.Close(c)
		unix.Read(a, make([]byte, 1))
		unix.Close(a)
		unix.Close(ln)
	})
	if cmd.Process == nil {
		return
	}
	// the events are in the kernel's ring buffer by now; SIGINT makes twtrace drain it and exit
	must(t, cmd.Process.Signal(os.Interrupt))
	<-stderr.eof // all of stderr read before Wait closes the pipe
	if err := cmd.Wait(); err != nil {
		t.Fatalf("twtrace watch: %v\n%s", err, stderr.String())
	}
	var kinds, states []string
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		kinds = append(kinds, ev["kind"].(string))
		if ev["kind"] == "state" {
			states = append(states, ev["old"].(string)+"->"+ev["new"].(string))
		}
	}
	for _, want := range []string{"CLOSE->LISTEN", "CLOSE->SYN_SENT", "ESTABLISHED->FIN_WAIT1", "FIN_WAIT2->TIME_WAIT", "LAST_ACK->CLOSE", "LISTEN->CLOSE"} {
		if !slices.Contains(states, want) {
			t.Errorf("no %s transition in %v", want, states)
		}
	}
	if !slices.Contains(kinds, "tw_enter") {
		t.Errorf("no tw_enter in %v", kinds)
	}
	if !strings.Contains(stderr.String(), " 0 lost") {
		t.Errorf("summary should report 0 lost: %s", stderr.String())
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// stderrWatch collects a process's stderr and lets a test wait for a line.
type stderrWatch struct {
	mu    sync.Mutex
	buf   strings.Builder
	lines chan string
	eof   chan struct{}
}

func watchStderr(r io.Reader) *stderrWatch {
	w := &stderrWatch{lines: make(chan string, 64), eof: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			w.mu.Lock()
			w.buf.WriteString(sc.Text() + "\n")
			w.mu.Unlock()
			select {
			case w.lines <- sc.Text():
			default:
			}
		}
		close(w.lines)
		close(w.eof)
	}()
	return w
}

func (w *stderrWatch) waitFor(substr string, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-w.lines:
			if !ok {
				return false
			}
			if strings.Contains(line, substr) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

func (w *stderrWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
