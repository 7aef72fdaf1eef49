package tracer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/bpfobj"
	"golang.org/x/sys/unix"
)

const injectedPanic = "reader panic injected by the test"

// A process whose event callback panics dies with the panic, and the kernel releases
// every program, link and map it held: nothing called Close.
func TestReaderPanicLeavesNothingAttached(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ns := newNetns(t)
	child := exec.Command(os.Args[0], "-test.run=^$", "-backend="+*testBackend)
	child.Env = append(os.Environ(), fmt.Sprintf("%s=panic-reader %d", childEnv, ns.inode))
	var stderr bytes.Buffer
	child.Stderr = &stderr
	out, err := child.StdoutPipe()
	must(t, "stdout pipe", err)
	must(t, "start child", child.Start())
	exited := make(chan error, 1)
	line, _ := bufio.NewReader(out).ReadString('\n')
	go func() { exited <- child.Wait() }()
	if line != "ready\n" {
		<-exited
		t.Fatalf("the child did not start tracing:\n%s", stderr.String())
	}
	held, err := bpfobj.Of(child.Process.Pid)
	must(t, "read the child's BPF objects", err)
	if len(held.Links) == 0 || len(held.Progs) < len(held.Links) || len(held.Maps) == 0 {
		child.Process.Kill()
		<-exited
		t.Fatalf("the child holds %d programs, %d links, %d maps: want attached programs", len(held.Progs), len(held.Links), len(held.Maps))
	}

	lfd, port := listenIn(t, ns, unix.AF_INET) // the first event reaches the callback, which panics
	clientCloses(t, ns, unix.AF_INET, lfd, port)
	unix.Close(lfd)
	select {
	case err = <-exited:
	case <-time.After(10 * time.Second):
		child.Process.Kill()
		<-exited
		t.Fatalf("the child did not die 10s after its events:\n%s", stderr.String())
	}
	st := child.ProcessState.Sys().(syscall.WaitStatus)
	if !st.Exited() || st.ExitStatus() != 2 || !strings.Contains(stderr.String(), "panic: "+injectedPanic) {
		t.Fatalf("child: %v, want exit status 2 from the panic:\n%s", err, stderr.String())
	}
	if left := held.WaitReleased(10 * time.Second); len(left) > 0 {
		t.Fatalf("still in the kernel 10s after the child died: %s", strings.Join(left, ", "))
	}
}

// panicReader is the child: it attaches, never closes anything, and panics in the
// event callback on the reader goroutine, as serve's reader runs.
func panicReader(netns uint32) int {
	backend, err := ParseBackend(*testBackend)
	if err != nil {
		fmt.Fprintln(os.Stderr, "panic-reader:", err)
		return 1
	}
	tr, err := New(Options{Families: FamilyState, Filter: Filter{NetNS: netns}, Backend: backend})
	if err != nil {
		fmt.Fprintln(os.Stderr, "panic-reader:", err)
		return 1
	}
	fmt.Println("ready")
	go tr.Run(context.Background(), func(*Event) { panic(injectedPanic) }, nil)
	time.Sleep(time.Minute)
	fmt.Fprintln(os.Stderr, "panic-reader: no event reached the callback")
	return 1
}
