package workload

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Real cgroups with the names systemd, docker and both kubelet drivers give, a process moved into
// each that then opens a socket: the kernel's own cgroup id for that socket (sock_diag) must resolve
// to exactly the workload the name says, and ss must name the same cgroup.
func TestRealCgroupsResolve(t *testing.T) {
	h := requireCgroup2(t)
	top := fmt.Sprintf("/twtrace-wl-%d", os.Getpid())
	const uid2 = "7d3c1b2a-9e8f-4a6b-8c5d-1e2f3a4b5c6d"
	id3 := strings.Repeat("3c", 32)
	cases := []struct {
		name, path string
		want       Workload
	}{
		{"systemd unit", top + "/system.slice/nginx.service", Workload{Unit: "nginx.service"}},
		{"kubelet systemd driver", top + "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidS + ".slice/cri-containerd-" + id1 + ".scope",
			Workload{Runtime: "containerd", ContainerID: id1, PodUID: uid}},
		{"kubelet cgroupfs driver", top + "/kubepods/besteffort/pod" + uid2 + "/" + id2, Workload{ContainerID: id2, PodUID: uid2}},
		{"docker", top + "/system.slice/docker-" + id3 + ".scope", Workload{Runtime: "docker", ContainerID: id3}},
	}
	r := New(Options{Hierarchy: &h})
	for _, c := range cases {
		makeCgroup(t, h, c.path)
		child := startListener(t, h, c.path, false)
		id, err := listenerCgroupID(child.port)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if _, dirID, err := h.Lookup(c.path); err != nil || dirID != id {
			t.Fatalf("%s: the socket's cgroup id is %d, the cgroup's directory %d (%v)", c.name, id, dirID, err)
		}
		c.want.Cgroup = c.path
		if got, ok := r.Cgroup(id); !ok || got != c.want {
			t.Errorf("%s: Cgroup(%d) = %+v, %v; want %+v", c.name, id, got, ok, c.want)
		}
		out, err := exec.Command("ss", "-tlnH", "--cgroup", fmt.Sprintf("sport = :%d", child.port)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "cgroup:"+c.path) {
			t.Errorf("%s: ss names another cgroup than %s: %s %v", c.name, c.path, out, err)
		}
		child.stop()
	}
	if s := r.Stats(); s.Misses != 0 || s.Walks == 0 || s.Walks > uint64(len(cases)) {
		t.Errorf("stats %+v: want no miss and at most one walk per new cgroup", s)
	}
}

// A pod's processes in a network namespace of their own name it as that pod's; a container outside
// Kubernetes names its own; the host's namespace, shared with host-network pods, names none.
func TestRealNetnsResolve(t *testing.T) {
	h := requireCgroup2(t)
	top := fmt.Sprintf("/twtrace-wlns-%d", os.Getpid())
	podPath := top + "/kubepods/burstable/pod" + uid + "/" + id1
	dockerPath := top + "/docker/" + id2
	hostPodPath := top + "/kubepods/besteffort/pod" + static + "/" + strings.Repeat("ab", 32)
	for _, p := range []string{podPath, dockerPath, hostPodPath} {
		makeCgroup(t, h, p)
	}
	pod := startListener(t, h, podPath, true)
	docker := startListener(t, h, dockerPath, true)
	hostPod := startListener(t, h, hostPodPath, false)

	r := New(Options{Hierarchy: &h})
	if got, ok := r.Netns(pod.netns(t)); !ok || got != (Workload{PodUID: uid}) {
		t.Errorf("pod's netns: %+v, %v", got, ok)
	}
	if got, ok := r.Netns(docker.netns(t)); !ok || got != (Workload{Runtime: "docker", ContainerID: id2}) {
		t.Errorf("container's netns: %+v, %v", got, ok)
	}
	if hostPod.netns(t) != initNetns {
		t.Logf("this test does not run in the host's network namespace: host-network case skipped")
	} else if got, ok := r.Netns(hostPod.netns(t)); ok {
		t.Errorf("host netns named %+v", got)
	}
	if s := r.Stats(); s.NetnsScans != 1 {
		t.Errorf("netns scans %d, want 1: one scan finds every namespace", s.NetnsScans)
	}

	// The pod's namespace dies with its process: its inode may be reused, so it is not named any more.
	ns := pod.netns(t)
	pod.stop()
	r.o.Now = func() time.Time { return time.Now().Add(time.Hour) }
	if got, ok := r.Netns(ns); ok {
		t.Errorf("a gone netns still named %+v", got)
	}
}
