package cgroup2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Getenv("TWTRACE_UNIT_ONLY") != "" {
		t.Skip("TWTRACE_UNIT_ONLY is set (make test-unit): kernel tests skipped")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups and moves processes into them (run make test as root)")
	}
}

// A cgroup's id is its directory's inode: the kernel's own file handle for the directory (kernfs
// encodes the cgroup id in it) must agree with what Lookup and Walk say.
func TestRealCgroupIDsAndPaths(t *testing.T) {
	requireRoot(t)
	h, err := Find()
	if err != nil {
		t.Skipf("this machine: %v", err)
	}
	top := fmt.Sprintf("/twtrace-test-%d", os.Getpid())
	leaf := top + "/system.slice/nginx.service"
	dir, err := h.Dir(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sleeper.Process.Kill()
		sleeper.Wait()
		for d := dir; d != filepath.Dir(mustDir(t, h, top)); d = filepath.Dir(d) {
			if err := os.Remove(d); err != nil {
				t.Errorf("clean up: %v", err)
			}
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}

	handle, _, err := unix.NameToHandleAt(unix.AT_FDCWD, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	kernelID := binary.LittleEndian.Uint64(handle.Bytes())

	p, id, err := h.Lookup(leaf)
	if err != nil || p != leaf || id != kernelID {
		t.Fatalf("Lookup(%s) = %s, %d, %v; the kernel's id is %d", leaf, p, id, err, kernelID)
	}
	p, id, err = h.Lookup(dir)
	if err != nil || p != leaf || id != kernelID {
		t.Fatalf("Lookup(%s) = %s, %d, %v; want %s, %d", dir, p, id, err, leaf, kernelID)
	}
	if _, _, err := h.Lookup(top + "/nope"); err == nil {
		t.Fatalf("Lookup of a cgroup that does not exist: no error")
	}

	walked := map[uint64]string{}
	if err := h.Walk(func(p string, id uint64) { walked[id] = p }); err != nil {
		t.Fatal(err)
	}
	if walked[kernelID] != leaf || walked[mustID(t, h, top)] != top {
		t.Fatalf("Walk: id %d -> %q, want %q", kernelID, walked[kernelID], leaf)
	}

	got, err := ProcessPath(sleeper.Process.Pid)
	if err != nil || got != leaf {
		t.Fatalf("ProcessPath = %q, %v; want %q", got, err, leaf)
	}
	pids, err := h.Procs(leaf)
	if err != nil || len(pids) != 1 || pids[0] != sleeper.Process.Pid {
		t.Fatalf("Procs = %v, %v; want [%d]", pids, err, sleeper.Process.Pid)
	}
}

func mustDir(t *testing.T, h Hierarchy, p string) string {
	d, err := h.Dir(p)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustID(t *testing.T, h Hierarchy, p string) uint64 {
	_, id, err := h.Lookup(p)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// PathOf agrees with Walk for every cgroup of the machine, and finds no removed one.
func TestPathOfAgreesWithWalk(t *testing.T) {
	requireRoot(t)
	h, err := Find()
	if err != nil {
		t.Skipf("this machine: %v", err)
	}
	n := 0
	h.Walk(func(p string, id uint64) {
		got, err := h.PathOf(id)
		if err != nil || got != p {
			t.Errorf("PathOf(%d) = %q, %v; Walk says %q", id, got, err, p)
		}
		n++
	})
	if n == 0 {
		t.Fatal("walked no cgroup")
	}
	dir, _ := h.Dir(fmt.Sprintf("/twtrace-gone-%d", os.Getpid()))
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(dir, 0o755))
	_, id, err := h.Lookup(dir)
	must(err)
	must(os.Remove(dir))
	if p, err := h.PathOf(id); !errors.Is(err, ErrNoCgroup) {
		t.Errorf("a removed cgroup: %q, %v", p, err)
	}
}
