package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strings"
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
	var stdout, stderr bytes.Buffer
	var cmd *exec.Cmd
	inNetns(t, func(inode uint64) {
		cmd = exec.Command(twtraceBin, "watch", "-o", "json", "--duration", "4s", "--backend", *testBackend,
			"--netns", fmt.Sprint(inode))
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Errorf("start twtrace: %v", err)
			return
		}
		time.Sleep(1500 * time.Millisecond) // twtrace measures HZ and attaches before it traces
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

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
