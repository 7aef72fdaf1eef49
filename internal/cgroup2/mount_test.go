package cgroup2

import (
	"errors"
	"strings"
	"testing"
)

func TestFindIn(t *testing.T) {
	const hybrid = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	const pure = `25 20 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	// A container that bind-mounts one pod's cgroup first and the host's whole hierarchy after it.
	const sub = `100 90 0:22 /kubepods.slice/kubepods-pod1.slice /sys/fs/cgroup ro - cgroup2 cgroup2 rw
101 90 0:22 / /host/sys/fs/cgroup ro - cgroup2 cgroup2 rw
`
	const onlySub = `100 90 0:22 /kubepods.slice/kubepods-pod1.slice /sys/fs/cgroup ro - cgroup2 cgroup2 rw
`
	const outsideNS = `100 90 0:22 /../../.. /host/cgroup ro - cgroup2 cgroup2 rw
`
	// a container's own (namespaced) cgroup2, then the host's mounted over it
	const shadowed = `30 20 0:22 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw
40 30 0:22 /kubepods/pod1 /sys/fs/cgroup ro - cgroup2 cgroup2 rw
`
	const escaped = `41 31 0:38 / /mnt/my\040cgroup rw,relatime - cgroup2 cgroup2 rw
`
	for _, c := range []struct {
		name, mountinfo string
		want            Hierarchy
	}{
		{"hybrid", hybrid, Hierarchy{"/sys/fs/cgroup/unified", "/"}},
		{"pure v2", pure, Hierarchy{"/sys/fs/cgroup", "/"}},
		{"whole hierarchy preferred", sub, Hierarchy{"/host/sys/fs/cgroup", "/"}},
		{"only a sub-cgroup", onlySub, Hierarchy{"/sys/fs/cgroup", "/kubepods.slice/kubepods-pod1.slice"}},
		{"root outside the cgroup namespace", outsideNS, Hierarchy{"/host/cgroup", "/"}},
		{"escaped mount point", escaped, Hierarchy{"/mnt/my cgroup", "/"}},
		{"the last mount on a point hides the others", shadowed, Hierarchy{"/sys/fs/cgroup", "/kubepods/pod1"}},
	} {
		got, err := FindIn(strings.NewReader(c.mountinfo))
		if err != nil || got != c.want {
			t.Errorf("%s: got %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

func TestFindInNoCgroup2(t *testing.T) {
	const v1only = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
`
	_, err := FindIn(strings.NewReader(v1only))
	if !errors.Is(err, ErrNotMounted) || err.Error() != "no cgroup v2 hierarchy mounted" {
		t.Fatalf("got %v, want ErrNotMounted", err)
	}
}

func TestDirAndPath(t *testing.T) {
	h := Hierarchy{Mount: "/sys/fs/cgroup/unified", Root: "/"}
	for p, want := range map[string]string{
		"/":                           "/sys/fs/cgroup/unified",
		"/system.slice/nginx.service": "/sys/fs/cgroup/unified/system.slice/nginx.service",
		"kubepods/pod1/../pod2":       "/sys/fs/cgroup/unified/kubepods/pod2",
	} {
		got, err := h.Dir(p)
		if err != nil || got != want {
			t.Errorf("Dir(%q) = %q, %v; want %q", p, got, err, want)
		}
	}
	sub := Hierarchy{Mount: "/sys/fs/cgroup", Root: "/kubepods.slice"}
	if got, err := sub.Dir("/kubepods.slice/x.slice"); err != nil || got != "/sys/fs/cgroup/x.slice" {
		t.Errorf("sub Dir = %q, %v", got, err)
	}
	if _, err := sub.Dir("/kubepods.sliceX/y"); err == nil {
		t.Errorf("sub Dir of a sibling with a common prefix: no error")
	}
	if got, err := sub.Path("/sys/fs/cgroup/x.slice/y.scope"); err != nil || got != "/kubepods.slice/x.slice/y.scope" {
		t.Errorf("sub Path = %q, %v", got, err)
	}
	if _, err := h.Path("/sys/fs/cgroup/memory"); err == nil {
		t.Errorf("Path outside the mount: no error")
	}
}

func TestLevel(t *testing.T) {
	for p, want := range map[string]int{"/": 0, "": 0, "/a": 1, "/a/b/": 2, "/kubepods/burstable/pod1/abc": 4} {
		if got := Level(p); got != want {
			t.Errorf("Level(%q) = %d, want %d", p, got, want)
		}
	}
}
