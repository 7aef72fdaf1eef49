package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/bpfobj"
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
			var held bpfobj.Held
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
				var err error
				if held, err = bpfobj.Of(cmd.Process.Pid); err != nil {
					t.Fatal(err)
				}
				clientFirst(t, 0, 1) // events in flight while it stops
			})
			if len(held.Links) == 0 || len(held.Progs) < len(held.Links) || len(held.Maps) == 0 {
				t.Fatalf("twtrace holds %d programs, %d links, %d maps: want attached programs", len(held.Progs), len(held.Links), len(held.Maps))
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
			if left := held.WaitReleased(10 * time.Second); len(left) > 0 {
				t.Fatalf("still in the kernel 10s after twtrace died: %s", strings.Join(left, ", "))
			}
		})
	}
	t.Cleanup(func() {
		if after := bpffsEntries(t); !slices.Equal(after, pinnedBefore) {
			t.Errorf("/sys/fs/bpf changed:\n before %q\n after  %q", pinnedBefore, after)
		}
	})
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
