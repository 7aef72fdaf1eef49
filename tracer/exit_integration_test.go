package tracer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
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
	held := heldBPFObjects(t, child.Process.Pid)
	if len(held.links) == 0 || len(held.progs) < len(held.links) || len(held.maps) == 0 {
		child.Process.Kill()
		<-exited
		t.Fatalf("the child holds %d programs, %d links, %d maps: want attached programs", len(held.progs), len(held.links), len(held.maps))
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
	waitReleased(t, held)
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

// bpfObjects are the IDs of the programs, links and maps a process holds.
type bpfObjects struct{ progs, links, maps []uint32 }

// heldBPFObjects reads them from the process's /proc/PID/fdinfo.
func heldBPFObjects(t *testing.T, pid int) bpfObjects {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	entries, err := os.ReadDir(dir)
	must(t, "read fdinfo", err)
	ids := map[string]map[uint32]bool{"prog_id": {}, "link_id": {}, "map_id": {}}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(data), "\n") {
			key, val, ok := strings.Cut(line, ":")
			if set := ids[key]; ok && set != nil {
				id, err := strconv.ParseUint(strings.TrimSpace(val), 10, 32)
				must(t, "parse "+line, err)
				set[uint32(id)] = true
			}
		}
	}
	sorted := func(set map[uint32]bool) []uint32 {
		out := make([]uint32, 0, len(set))
		for id := range set {
			out = append(out, id)
		}
		slices.Sort(out)
		return out
	}
	return bpfObjects{sorted(ids["prog_id"]), sorted(ids["link_id"]), sorted(ids["map_id"])}
}

// waitReleased fails unless every object is gone from the kernel before a deadline:
// programs and links go at once, maps after an RCU grace period.
func waitReleased(t *testing.T, o bpfObjects) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := stillLoaded(o)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still in the kernel 10s after the process died: %s", strings.Join(left, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stillLoaded(o bpfObjects) []string {
	var left []string
	check := func(kind string, id uint32, open func() (interface{ Close() error }, error)) {
		obj, err := open()
		switch {
		case err == nil:
			obj.Close()
			left = append(left, fmt.Sprintf("%s %d", kind, id))
		case !errors.Is(err, os.ErrNotExist):
			left = append(left, fmt.Sprintf("%s %d (%v)", kind, id, err))
		}
	}
	for _, id := range o.progs {
		check("program", id, func() (interface{ Close() error }, error) { return ebpf.NewProgramFromID(ebpf.ProgramID(id)) })
	}
	for _, id := range o.links {
		check("link", id, func() (interface{ Close() error }, error) { return link.NewFromID(link.ID(id)) })
	}
	for _, id := range o.maps {
		check("map", id, func() (interface{ Close() error }, error) { return ebpf.NewMapFromID(ebpf.MapID(id)) })
	}
	return left
}
