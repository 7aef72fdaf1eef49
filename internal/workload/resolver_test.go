package workload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/cgroup2"
	"github.com/twtrace/twtrace/internal/cri"
)

// The cache logic on a directory tree standing in for the cgroup2 mount (an id is a directory's
// inode, as in cgroupfs), with a fake clock; the real hierarchy is in cgroups_integration_test.go.

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) sleep(d time.Duration)   { c.t = c.t.Add(d) }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

type fakePods struct {
	snap  cri.Snapshot
	err   error
	calls int
}

func (f *fakePods) Snapshot(context.Context) (cri.Snapshot, error) {
	f.calls++
	return f.snap, f.err
}

func newTree(t *testing.T) (cgroup2.Hierarchy, func(p string) uint64) {
	h := cgroup2.Hierarchy{Mount: t.TempDir(), Root: "/"}
	return h, func(p string) uint64 {
		dir, _ := h.Dir(p)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_, id, err := h.Lookup(p)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
}

func newResolver(h *cgroup2.Hierarchy, pods PodSource, c *clock, mod func(*Options)) *Resolver {
	o := Options{Hierarchy: h, Now: c.now, Sleep: c.sleep}
	if pods != nil {
		o.Pods = pods
	}
	if mod != nil {
		mod(&o)
	}
	return New(o)
}

func TestResolverCachesAndWalksOnMiss(t *testing.T) {
	h, mk := newTree(t)
	c := &clock{t: time.Unix(1000, 0)}
	r := newResolver(&h, nil, c, nil)
	nginx := mk("/system.slice/nginx.service")
	if w, ok := r.Cgroup(nginx); !ok || w != (Workload{Cgroup: "/system.slice/nginx.service", Unit: "nginx.service"}) {
		t.Fatalf("got %+v %v", w, ok)
	}
	if w, ok := r.Cached(nginx); !ok || w.Unit != "nginx.service" {
		t.Fatalf("Cached: %+v %v", w, ok)
	}
	for range 100 {
		r.Cgroup(nginx)
	}
	if s := r.Stats(); s.Walks != 1 || s.Misses != 0 {
		t.Fatalf("hits walked again: %+v", s)
	}

	// A cgroup created just after a walk: the miss waits out MinRefresh, then finds it.
	pod := mk("/kubepods/burstable/pod" + uid + "/" + id1)
	before := c.t
	if w, ok := r.Cgroup(pod); !ok || w.PodUID != uid || w.ContainerID != id1 {
		t.Fatalf("new cgroup: %+v %v", w, ok)
	}
	if waited := c.t.Sub(before); waited != 100*time.Millisecond {
		t.Fatalf("waited %v before walking again, want MinRefresh (100ms)", waited)
	}
	if _, ok := r.Cached(12345); ok {
		t.Fatal("Cached invented an entry")
	}
}

func TestResolverUnknownIDsAreRetriedLater(t *testing.T) {
	h, _ := newTree(t)
	c := &clock{t: time.Unix(1000, 0)}
	r := newResolver(&h, nil, c, nil)
	const nowhere = 1 << 40
	for range 10 {
		if w, ok := r.Cgroup(nowhere); ok || w != (Workload{}) {
			t.Fatalf("unknown id named %+v", w)
		}
	}
	if s := r.Stats(); s.Walks != 1 || s.Misses != 10 {
		t.Fatalf("an unknown id walked more than once within RetryUnknown: %+v", s)
	}
	c.advance(time.Second)
	r.Cgroup(nowhere)
	if s := r.Stats(); s.Walks != 2 {
		t.Fatalf("an unknown id was not looked for again after RetryUnknown: %+v", s)
	}
}

func TestResolverRetainsThenForgetsRemovedCgroups(t *testing.T) {
	h, mk := newTree(t)
	c := &clock{t: time.Unix(1000, 0)}
	r := newResolver(&h, nil, c, func(o *Options) { o.Retain = time.Minute })
	const p = "/system.slice/docker-" + id1 + ".scope"
	id := mk(p)
	r.Cgroup(id)
	dir, _ := h.Dir(p)
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	c.advance(2 * time.Second)
	r.Cgroup(1 << 40) // a miss walks and sees it gone
	if w, ok := r.Cgroup(id); !ok || w.ContainerID != id1 {
		t.Fatalf("a removed container was forgotten at once: %+v %v", w, ok)
	}
	c.advance(time.Minute)
	r.Cgroup(1<<40 + 1)
	if w, ok := r.Cgroup(id); ok {
		t.Fatalf("a container removed a minute ago is still named %+v", w)
	}
	if s := r.Stats(); s.Forgotten != 1 {
		t.Fatalf("forgotten %d, want 1", s.Forgotten)
	}
}

func TestResolverStaysWithinMaxCgroups(t *testing.T) {
	h, mk := newTree(t)
	c := &clock{t: time.Unix(1000, 0)}
	r := newResolver(&h, nil, c, func(o *Options) { o.MaxCgroups = 3 })
	var ids []uint64
	for i := range 10 {
		ids = append(ids, mk("/system.slice/svc"+strconv.Itoa(i)+".service"))
	}
	for _, id := range ids {
		if w, ok := r.Cgroup(id); !ok || w.Unit == "" {
			t.Fatalf("id %d: %+v %v", id, w, ok)
		}
	}
	if s := r.Stats(); s.Cgroups != 3 || s.Forgotten != 7 {
		t.Fatalf("bound not kept: %+v", s)
	}
}

func TestResolverNamesPodsFromTheRuntime(t *testing.T) {
	h, mk := newTree(t)
	c := &clock{t: time.Unix(1000, 0)}
	pods := &fakePods{snap: cri.Snapshot{
		Pods:       map[string]cri.Pod{uid: {UID: uid, Namespace: "shop", Name: "cart-7d9f", SandboxID: id2}},
		Containers: map[string]cri.Container{id1: {ID: id1, Name: "web", SandboxID: id2, PodUID: uid}},
		Sandboxes:  map[string]string{id2: uid},
	}}
	r := newResolver(&h, pods, c, nil)
	podDir := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidS + ".slice"
	web := mk(podDir + "/cri-containerd-" + id1 + ".scope")
	sandbox := mk(podDir + "/cri-containerd-" + id2 + ".scope")
	want := Workload{Cgroup: podDir + "/cri-containerd-" + id1 + ".scope", Runtime: "containerd", ContainerID: id1,
		PodUID: uid, PodNamespace: "shop", Pod: "cart-7d9f", Container: "web"}
	if w, ok := r.Cgroup(web); !ok || w != want {
		t.Fatalf("got  %+v\nwant %+v", w, want)
	}
	if w, _ := r.Cgroup(sandbox); w.Pod != "cart-7d9f" || w.Container != "" {
		t.Fatalf("sandbox: %+v", w)
	}
	if pods.calls != 1 {
		t.Fatalf("listed pods %d times, want once", pods.calls)
	}

	// A pod the runtime does not list yet keeps its UID alone, and is asked for again later.
	const uid3 = "11111111-2222-3333-4444-555555555555"
	late := mk("/kubepods/besteffort/pod" + uid3 + "/" + id1[:60] + "beef")
	if w, ok := r.Cgroup(late); !ok || w.PodUID != uid3 || w.Pod != "" {
		t.Fatalf("unlisted pod: %+v %v", w, ok)
	}
	pods.snap.Pods[uid3] = cri.Pod{UID: uid3, Namespace: "batch", Name: "job-1"}
	if w, _ := r.Cgroup(late); w.Pod != "" {
		t.Fatalf("runtime asked again before RetryUnknown: %+v", w)
	}
	c.advance(time.Second)
	if w, _ := r.Cgroup(late); w.PodNamespace != "batch" || w.Pod != "job-1" {
		t.Fatalf("pod listed later is still unnamed: %+v", w)
	}

	// A runtime that fails leaves names empty, and says why.
	pods.err = errors.New("connection refused")
	c.advance(time.Second)
	other := mk("/kubepods/besteffort/pod99999999-2222-3333-4444-555555555555")
	if w, ok := r.Cgroup(other); !ok || w.PodUID == "" || w.Pod != "" {
		t.Fatalf("with the runtime down: %+v %v", w, ok)
	}
	if s := r.Stats(); s.PodErrors != 1 || r.PodsErr() == nil {
		t.Fatalf("runtime error not counted: %+v %v", s, r.PodsErr())
	}
}

func TestResolverWithoutCgroup2(t *testing.T) {
	r := New(Options{})
	if w, ok := r.Cgroup(1); ok || w != (Workload{}) {
		t.Fatalf("no hierarchy, yet %+v", w)
	}
	if s := r.Stats(); s.Misses != 1 || s.Walks != 0 {
		t.Fatalf("%+v", s)
	}
}

// A /proc stand-in: each pid's ns/net is a file whose inode plays the namespace's; pids sharing a
// namespace share the file (hard links).
func TestNetnsSharedByTwoPodsIsAmbiguous(t *testing.T) {
	proc := t.TempDir()
	nsDir := t.TempDir()
	netns := func(name string) (string, uint64) {
		p := filepath.Join(nsDir, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		syscall.Stat(p, &st)
		return p, st.Ino
	}
	process := func(pid int, ns, cgroup string) {
		dir := filepath.Join(proc, strconv.Itoa(pid))
		os.MkdirAll(filepath.Join(dir, "ns"), 0o755)
		if err := os.Link(ns, filepath.Join(dir, "ns", "net")); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644)
	}
	const uidB = "22222222-2222-2222-2222-222222222222"
	shared, sharedIno := netns("shared")
	podA, podAIno := netns("a")
	v1, v1Ino := netns("v1")
	host, hostIno := netns("host")
	process(10, shared, "0::/kubepods/burstable/pod"+uid+"/"+id1+"\n")
	process(11, shared, "0::/kubepods/burstable/pod"+uidB+"/"+id2+"\n")
	process(20, podA, "0::/kubepods/burstable/pod"+uid+"/"+id1+"\n")
	process(21, podA, "0::/kubepods/burstable/pod"+uid+"/"+id2+"\n") // a second container of the pod
	process(22, podA, "0::/system.slice/sshd.service\n")             // nsenter from the host: ignored
	// a cgroup v1 host: the v2 line says nothing, a controller's path names the pod
	process(30, v1, "12:memory:/kubepods/besteffort/pod"+uidB+"/"+id2+"\n1:name=systemd:/kubepods/besteffort/pod"+uidB+"/"+id2+"\n0::/\n")
	process(40, host, "0::/system.slice/nginx.service\n")

	c := &clock{t: time.Unix(1000, 0)}
	r := New(Options{ProcRoot: proc, Now: c.now, Sleep: c.sleep})
	if w, ok := r.Netns(sharedIno); ok {
		t.Errorf("a namespace of two pods named %+v", w)
	}
	if w, ok := r.Netns(podAIno); !ok || w != (Workload{PodUID: uid}) {
		t.Errorf("pod A: %+v %v", w, ok)
	}
	if w, ok := r.Netns(v1Ino); !ok || w != (Workload{PodUID: uidB}) {
		t.Errorf("v1 host pod: %+v %v", w, ok)
	}
	if w, ok := r.Netns(hostIno); ok {
		t.Errorf("a host process's namespace named %+v", w)
	}
	if s := r.Stats(); s.AmbiguousNetns != 1 {
		t.Errorf("ambiguous %d, want 1", s.AmbiguousNetns)
	}
	// namespaces no single workload holds are not scanned for again at once, every one of them
	scans := r.Stats().NetnsScans
	for range 3 {
		r.Netns(hostIno)
		r.Netns(sharedIno)
	}
	if s := r.Stats(); s.NetnsScans != scans {
		t.Errorf("%d scans of /proc for namespaces known to have no workload, want none", s.NetnsScans-scans)
	}
	c.sleep(time.Second) // RetryUnknown: a pod may have started there since
	r.Netns(hostIno)
	if s := r.Stats(); s.NetnsScans != scans+1 {
		t.Errorf("%d scans after RetryUnknown, want 1", s.NetnsScans-scans)
	}
}

func TestPodAndContainerCgroups(t *testing.T) {
	h, mk := newTree(t)
	c := &clock{t: time.Unix(1000, 0)}
	pods := &fakePods{snap: cri.Snapshot{
		Pods: map[string]cri.Pod{uid: {UID: uid, Namespace: "shop", Name: "cart"}},
	}}
	r := newResolver(&h, pods, c, nil)
	podDir := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidS + ".slice"
	mk(podDir + "/cri-containerd-" + id1 + ".scope")
	mk(podDir + "/cri-containerd-" + id2 + ".scope/nested")
	mk("/system.slice/docker-" + id1[:20] + "ffff" + id1[24:] + ".scope")
	for _, ref := range []string{"shop/cart", uid} {
		if got, err := r.PodCgroup(ref); err != nil || got != podDir {
			t.Errorf("PodCgroup(%s) = %q, %v; want %s", ref, got, err, podDir)
		}
	}
	if _, err := r.PodCgroup("shop/gone"); err == nil || err.Error() != "no pod shop/gone on this node: the container runtime does not list it" {
		t.Errorf("missing pod: %v", err)
	}
	if got, err := r.ContainerCgroup(id2[:12]); err != nil || got != podDir+"/cri-containerd-"+id2+".scope" {
		t.Errorf("ContainerCgroup = %q, %v", got, err)
	}
	if _, err := r.ContainerCgroup(id1[:12]); err == nil || err.Error() != "container id "+id1[:12]+" is ambiguous: several containers' ids start with it" {
		t.Errorf("ambiguous prefix: %v", err)
	}
	if got, err := r.ContainerCgroup(id1); err != nil || got != podDir+"/cri-containerd-"+id1+".scope" {
		t.Errorf("full id: %q, %v", got, err)
	}
	noCRI := newResolver(&h, nil, c, nil)
	if _, err := noCRI.PodCgroup("shop/cart"); err == nil {
		t.Error("NAMESPACE/NAME without a runtime: no error")
	}
}

// CgroupNow answers exactly as Cgroup does wherever Cgroup needs no lookup, and refuses
// (without a walk) wherever it would look: a new id, an unknown one due for a retry.
func TestCgroupNowAnswersOnlyWithoutALookup(t *testing.T) {
	h, mk := newTree(t)
	c := &clock{t: time.Unix(1000, 0)}
	r := newResolver(&h, nil, c, nil)
	nginx := mk("/system.slice/nginx.service")
	const nowhere = 1 << 40
	for _, id := range []uint64{nginx, nowhere} {
		if w, known, ready := r.CgroupNow(id); ready || known || w != (Workload{}) {
			t.Fatalf("id %d never looked up: CgroupNow answered %+v %v %v", id, w, known, ready)
		}
	}
	if s := r.Stats(); s.Walks != 0 || s.Misses != 0 {
		t.Fatalf("CgroupNow looked up or counted: %+v", s)
	}
	for _, id := range []uint64{nginx, nowhere} {
		want, wantKnown := r.Cgroup(id)
		if w, known, ready := r.CgroupNow(id); !ready || w != want || known != wantKnown {
			t.Fatalf("id %d: CgroupNow %+v %v %v, Cgroup %+v %v", id, w, known, ready, want, wantKnown)
		}
	}
	walked := r.Stats()
	if walked.Misses != 2 {
		t.Fatalf("want the unknown id's two misses counted (Cgroup's, CgroupNow's): %+v", walked)
	}
	c.advance(time.Second)
	if _, _, ready := r.CgroupNow(nowhere); ready {
		t.Fatal("an unknown id due for a retry answered without one")
	}
	if w, known, ready := r.CgroupNow(nginx); !ready || !known || w.Unit != "nginx.service" {
		t.Fatalf("a named cgroup is answered from the cache at any age: %+v %v %v", w, known, ready)
	}
	if s := r.Stats(); s.Walks != walked.Walks {
		t.Fatalf("CgroupNow walked: %+v, before %+v", s, walked)
	}
}
