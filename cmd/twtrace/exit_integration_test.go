package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// However twtrace ends, nothing it loaded outlives it: every program, link and map it
// held is gone from the kernel (IDs are not reused soon, so this is exact even while
// other tests load their own), and nothing is pinned (a pinned object keeps its ID).
func TestExitLeavesNothingAttached(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	cases := []struct {
		cmd    string
		sig    syscall.Signal
		status int // -1: killed by sig
	}{
		{"watch", unix.SIGINT, 0},
		{"watch", unix.SIGTERM, 0},
		{"watch", unix.SIGKILL, -1},
		{"serve", unix.SIGTERM, 0},
		{"serve", unix.SIGKILL, -1},
	}
	pinnedBefore := bpffsEntries(t)
	for _, tc := range cases {
		t.Run(tc.cmd+"/"+unix.SignalName(tc.sig), func(t *testing.T) {
			t.Parallel()
			var cmd *exec.Cmd
			var stderr *stderrWatch
			var held bpfObjects
			inNetns(t, func(inode uint64) {
				// serve without --listen: its own namespace's 127.0.0.1:9580 is free
				cmd, _, stderr = startTwtrace(t, tc.cmd, "--backend", *testBackend, "--netns", fmt.Sprint(inode))
				t.Cleanup(func() {
					if cmd.ProcessState == nil { // the test failed before it could stop it
						cmd.Process.Kill()
						cmd.Wait()
					}
				})
				if tc.cmd == "serve" {
					if !stderr.waitFor("serving", 10*time.Second) {
						t.Fatalf("serve did not start:\n%s", stderr.String())
					}
					if addr := regexp.MustCompile(`listen=(\S+)`).FindStringSubmatch(stderr.String()); addr == nil || addr[1] != "127.0.0.1:9580" {
						t.Fatalf("serve listens on %q by default, want loopback 127.0.0.1:9580:\n%s", addr, stderr.String())
					}
				}
				held = heldBPFObjects(t, cmd.Process.Pid)
				clientFirst(t, 0, 1) // events in flight while it stops
			})
			if len(held.links) == 0 || len(held.progs) < len(held.links) || len(held.maps) == 0 {
				t.Fatalf("twtrace holds %d programs, %d links, %d maps: want attached programs", len(held.progs), len(held.links), len(held.maps))
			}
			must(t, cmd.Process.Signal(tc.sig))
			<-stderr.eof
			err := cmd.Wait()
			st := cmd.ProcessState.Sys().(syscall.WaitStatus)
			switch {
			case tc.status < 0 && !(st.Signaled() && st.Signal() == tc.sig):
				t.Errorf("twtrace %s: %v, want killed by %v\n%s", tc.cmd, err, tc.sig, stderr.String())
			case tc.status >= 0 && (!st.Exited() || st.ExitStatus() != tc.status):
				t.Errorf("twtrace %s after %v: %v, want exit status %d\n%s", tc.cmd, tc.sig, err, tc.status, stderr.String())
			case tc.status == 0 && !strings.Contains(stderr.String(), " 0 lost "):
				t.Errorf("no summary after %v:\n%s", tc.sig, stderr.String())
			}
			waitReleased(t, held)
		})
	}
	t.Cleanup(func() {
		if after := bpffsEntries(t); !slices.Equal(after, pinnedBefore) {
			t.Errorf("/sys/fs/bpf changed:\n before %q\n after  %q", pinnedBefore, after)
		}
	})
}

// bpfObjects are the IDs of the programs, links and maps a process holds.
type bpfObjects struct{ progs, links, maps []uint32 }

// heldBPFObjects reads them from the process's /proc/PID/fdinfo.
func heldBPFObjects(t *testing.T, pid int) bpfObjects {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	entries, err := os.ReadDir(dir)
	must(t, err)
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
				must(t, err)
				set[uint32(id)] = true
			}
		}
	}
	sorted := func(set map[uint32]bool) []uint32 {
		var out []uint32
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
			t.Fatalf("still in the kernel 10s after twtrace exited: %s", strings.Join(left, ", "))
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

// bpffsEntries lists /sys/fs/bpf, failing on any entry named after twtrace.
func bpffsEntries(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir("/sys/fs/bpf", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(strings.ToLower(d.Name()), "twtrace") {
			t.Errorf("pinned: %s", path)
		}
		out = append(out, path)
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("list /sys/fs/bpf: %v", err)
	}
	return out
}
