package workload

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/containertest"
	"github.com/twtrace/twtrace/internal/cri"
)

// A real pod from a real containerd (its CRI plugin, runc, CNI), created the way the kubelet creates
// one (cgroupfs driver): the socket its container opened, by the cgroup id the kernel gives that
// socket, and its network namespace both name the pod's namespace, name and container, through the
// CRI API; the pod's TIME_WAIT sockets are in that namespace.
func TestRealContainerdPod(t *testing.T) {
	h := requireCgroup2(t)
	if testing.Short() {
		t.Skip("-short: starts containerd")
	}
	if why := containertest.Missing(); why != "" {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctd := containertest.StartForTest(ctx, t)
	pod, podID := ctd.RunPodForTest(ctx, t, "twtrace-cri")
	uid := pod.UID
	const conns = 20
	ctrID, err := ctd.RunContainer(ctx, podID, pod, "web", "churn", fmt.Sprint(conns))
	if err != nil {
		t.Fatal(err)
	}
	waitForLog(t, filepath.Join(ctd.Dir, "pods", uid, "web.log"), fmt.Sprintf("churned %d", conns))

	ctrCgroup := pod.CgroupParent + "/" + ctrID
	pids, err := h.Procs(ctrCgroup)
	if err != nil || len(pids) != 1 {
		t.Fatalf("container's processes in %s: %v %v", ctrCgroup, pids, err)
	}
	var sockCgroup uint64
	var timewait int
	err = inNetnsOf(pids[0], func() error {
		port, err := listeningPort()
		if err != nil {
			return err
		}
		if sockCgroup, err = listenerCgroupID(port); err != nil {
			return err
		}
		out, err := exec.Command("ss", "-tanH", "state", "time-wait").Output()
		timewait = strings.Count(string(out), "\n")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if timewait != conns {
		t.Fatalf("%d TIME_WAIT sockets in the pod's namespace, want %d", timewait, conns)
	}

	client, err := cri.Dial(ctx, ctd.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if !strings.HasPrefix(client.Runtime, "containerd ") {
		t.Errorf("runtime %q", client.Runtime)
	}
	r := New(Options{Hierarchy: &h, Pods: client})
	want := Workload{Cgroup: ctrCgroup, ContainerID: ctrID, PodUID: uid, PodNamespace: "shop", Pod: pod.Name, Container: "web"}
	if got, ok := r.Cgroup(sockCgroup); !ok || got != want {
		t.Fatalf("the container's socket (cgroup %d):\n got %+v\nwant %+v", sockCgroup, got, want)
	}
	_, sandboxCgroup, err := h.Lookup(pod.CgroupParent + "/" + podID)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := r.Cgroup(sandboxCgroup); !ok || got.Pod != pod.Name || got.PodNamespace != "shop" || got.Container != "" {
		t.Fatalf("the pod's sandbox: %+v %v", got, ok)
	}
	if got, err := r.PodCgroup("shop/" + pod.Name); err != nil || got != pod.CgroupParent {
		t.Fatalf("--pod shop/%s: %q, %v; want %s", pod.Name, got, err, pod.CgroupParent)
	}
	if got, err := r.ContainerCgroup(ctrID[:12]); err != nil || got != ctrCgroup {
		t.Fatalf("--container %s: %q, %v; want %s", ctrID[:12], got, err, ctrCgroup)
	}
	ns, err := netnsInode(pids[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := r.Netns(ns); !ok || got != (Workload{PodUID: uid, PodNamespace: "shop", Pod: pod.Name}) {
		t.Fatalf("the pod's network namespace %d: %+v %v", ns, got, ok)
	}

	// Removed, the pod is still named for the sockets it leaves behind, until Retain has passed.
	if err := ctd.RemovePod(ctx, podID); err != nil {
		t.Fatal(err)
	}
	r.o.Now = func() time.Time { return time.Now().Add(time.Minute) }
	r.Cgroup(1 << 62) // a miss walks: the container's cgroup is gone
	if got, ok := r.Cgroup(sockCgroup); !ok || got != want {
		t.Fatalf("the removed container: %+v %v", got, ok)
	}
	if s := r.Stats(); s.PodErrors != 0 || s.PodListings == 0 {
		t.Fatalf("runtime listings: %+v", s)
	}
}

// waitForLog waits until the container's CRI log has a line ending in want.
func waitForLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), " "+want+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container log %s never said %q: %q", path, want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inNetnsOf runs fn on a thread moved into the network namespace of pid.
func inNetnsOf(pid int, fn func() error) error {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns of %d: %w", pid, err)
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err == nil {
		runtime.UnlockOSThread() // else the thread stays locked and dies with the goroutine
	}
	return ferr
}

// listeningPort is the one IPv4 TCP port listening in the calling thread's namespace (ss).
func listeningPort() (uint16, error) {
	out, err := exec.Command("ss", "-tlnH4").Output()
	if err != nil {
		return 0, err
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 {
		return 0, fmt.Errorf("want one listener in the pod, ss shows %q", out)
	}
	fields := strings.Fields(lines[0])
	var port uint16
	_, err = fmt.Sscanf(fields[3][strings.LastIndex(fields[3], ":")+1:], "%d", &port)
	return port, err
}

func netnsInode(pid int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
