package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/cgroup2"
	"github.com/twtrace/twtrace/internal/workload"
)

// Kubelet-style cgroups for a server and a client (the two cgroup drivers), under a top cgroup
// of this test's own.
const (
	cgPodUID    = "0f6ad3b4-1c3e-4b8f-9a1d-7e2c5b8a9d10"
	cgClientUID = "7d3c1b2a-9e8f-4a6b-8c5d-1e2f3a4b5c6d"
)

var (
	cgServerCtr = strings.Repeat("5c", 32)
	cgClientCtr = strings.Repeat("a0", 32)
)

type testCgroups struct {
	h              cgroup2.Hierarchy
	top            string
	server, client string // cgroup paths
	serverID       uint64
	clientID       uint64
}

func newTestCgroups(t *testing.T) *testCgroups {
	t.Helper()
	requireRoot(t)
	h, err := cgroup2.Find()
	if err != nil {
		t.Skipf("this machine: %v", err)
	}
	top := fmt.Sprintf("/twtrace-tracer-%d", os.Getpid())
	cg := &testCgroups{h: h, top: top,
		server: top + "/kubepods/burstable/pod" + cgPodUID + "/" + cgServerCtr,
		client: top + "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" +
			strings.ReplaceAll(cgClientUID, "-", "_") + ".slice/cri-containerd-" + cgClientCtr + ".scope",
	}
	for _, p := range []string{cg.server, cg.client} {
		dir, err := h.Dir(p)
		must(t, "cgroup dir", err)
		must(t, "mkdir cgroup", os.MkdirAll(dir, 0o755))
	}
	t.Cleanup(func() {
		topDir, _ := h.Dir(top)
		var dirs []string
		filepath.WalkDir(topDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		}
	})
	_, cg.serverID, err = h.Lookup(cg.server)
	must(t, "server cgroup", err)
	_, cg.clientID, err = h.Lookup(cg.client)
	must(t, "client cgroup", err)
	return cg
}

// in runs f with this whole process moved into the cgroup at path (cgroup v2 moves processes,
// not threads): sockets created meanwhile belong to that cgroup.
func (cg *testCgroups) in(t *testing.T, path string, f func()) {
	t.Helper()
	home, err := cgroup2.ProcessPath(os.Getpid())
	must(t, "own cgroup", err)
	move := func(p string) {
		dir, err := cg.h.Dir(p)
		must(t, "cgroup dir", err)
		must(t, "move into "+p, os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0))
	}
	move(path)
	defer move(home)
	f()
}

// Every event of a full socket carries the cgroup it was created in, carried on to its timewait
// socket, to an overflow and to resets; an accepted socket has its listener's cgroup before its
// owner is known. The ids are the cgroups' own, and resolve to the pods their names say.
func TestCgroupOnEveryEvent(t *testing.T) {
	cg := newTestCgroups(t)
	ns := newNetns(t)
	ns.Sysctl(t, "net/ipv4/tcp_max_tw_buckets", "1")
	c := startTracer(t, Options{Families: AllFamilies, Filter: Filter{NetNS: ns.inode}})

	var lfd int
	var port uint16
	cg.in(t, cg.server, func() { lfd, port = listenIn(t, ns, unix.AF_INET) })
	var cfd [3]int
	var cport [3]uint16
	cg.in(t, cg.client, func() {
		for i := range cfd {
			cfd[i], cport[i] = connectIn(t, ns, unix.AF_INET, port, 0)
		}
	})
	var afd [3]int
	for i := range afd {
		afd[i] = acceptOn(t, lfd)
	}
	// the first two: the client closes first; the table holds one timewait socket, so the second overflows
	for i := range 2 {
		unix.Close(cfd[i])
		readEOF(t, afd[i])
		unix.Close(afd[i])
	}
	// the third: the server closes with unread data and sends a reset, which the client receives
	_, err := unix.Write(cfd[2], []byte("unread"))
	must(t, "write", err)
	waitReadable(t, afd[2])
	unix.Close(afd[2])
	c.waitFor(t, 5*time.Second, "the reset and the overflow", func(evs []Event) bool {
		return len(filter(evs, func(e *Event) bool { return e.Kind == KindReset && e.Recv && e.SPort == cport[2] })) == 1 &&
			len(filter(evs, ofKind(KindTWOverflow))) == 1
	})
	unix.Close(cfd[2])
	unix.Close(lfd)
	// a connect() the closed port refuses: its failure is the client's
	cg.in(t, cg.client, func() {
		fd := ns.SocketIn(t, unix.AF_INET)
		defer unix.Close(fd) // before the namespace's end: a socket holds its namespace
		if err := unix.Connect(fd, sockaddr(netip.MustParseAddr("127.0.0.1"), port)); !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("connect() to the closed port: %v, want ECONNREFUSED", err)
		}
	})
	ns.Destroy() // the timewait socket dies with its namespace
	evs := c.waitFor(t, 10*time.Second, "the timewait socket's death and the refused connect", func(evs []Event) bool {
		return len(filter(evs, ofKind(KindTWExit))) == 1 && len(filter(evs, ofKind(KindConnectFail))) == 1
	})

	acceptedUnowned := 0
	for _, e := range evs {
		want := uint64(0)
		switch {
		case e.NoSocket:
			// the overflowed client's peer closing later: a reset for a packet no socket matched
		case e.SPort == port:
			want = cg.serverID // the listener and the accepted sockets
		case e.SPort == cport[0] || e.SPort == cport[1] || e.SPort == cport[2] || e.Kind == KindState && e.OldState == StateClose:
			want = cg.clientID // connect's CLOSE->SYN_SENT has local port 0
		case e.DPort == port:
			want = cg.clientID // the refused connect: SYN_SENT->CLOSE, the reset it received, its connect_fail
		}
		if e.Cgroup != want {
			t.Errorf("cgroup %d, want %d: %s", e.Cgroup, want, e)
		}
		if e.SPort == port && e.Kind == KindState && !e.OwnerOK {
			acceptedUnowned++
		}
	}
	for _, k := range []Kind{KindTWEnter, KindTWExit, KindTWOverflow, KindConnectFail} {
		if n := len(filter(evs, ofKind(k))); n != 1 {
			t.Errorf("%d %v events, want 1:\n%s", n, k, dump(evs))
		}
	}
	// the third connection's reset, sent and received; the overflowed one's peer may add its own
	if n := len(filter(evs, func(e *Event) bool {
		return e.Kind == KindReset && (e.SPort == port && e.DPort == cport[2] || e.SPort == cport[2])
	})); n != 2 {
		t.Errorf("%d resets of the third connection, want the one sent and the one received:\n%s", n, dump(evs))
	}
	if acceptedUnowned == 0 {
		t.Errorf("no event of an accepted socket before its owner was known:\n%s", dump(evs))
	}

	r := workload.New(workload.Options{Hierarchy: &cg.h})
	server, ok := r.Cgroup(cg.serverID)
	if !ok || server != (workload.Workload{Cgroup: cg.server, PodUID: cgPodUID, ContainerID: cgServerCtr}) {
		t.Errorf("server workload %+v", server)
	}
	client, ok := r.Cgroup(cg.clientID)
	if !ok || client != (workload.Workload{Cgroup: cg.client, PodUID: cgClientUID, Runtime: "containerd", ContainerID: cgClientCtr}) {
		t.Errorf("client workload %+v", client)
	}
}

// --cgroup keeps one subtree in the kernel: the other cgroup's events never cross the ring buffer,
// and the kernel counts them.
func TestCgroupFilterInKernel(t *testing.T) {
	cg := newTestCgroups(t)
	ns := newNetns(t)
	subtree := cg.top + "/kubepods" // the server's; the client is under kubepods.slice
	_, id, err := cg.h.Lookup(subtree)
	must(t, "subtree", err)
	c := startTracer(t, Options{Families: FamilyState,
		Filter: Filter{NetNS: ns.inode, Cgroup: CgroupFilter{ID: id, Level: uint32(cgroup2.Level(subtree))}}})
	var lfd int
	var port uint16
	cg.in(t, cg.server, func() { lfd, port = listenIn(t, ns, unix.AF_INET) })
	defer unix.Close(lfd)
	const conns = 3
	for range conns {
		cg.in(t, cg.client, func() { clientCloses(t, ns, unix.AF_INET, lfd, port) })
	}
	evs := c.waitFor(t, 5*time.Second, "the server's side of every connection closed", func(evs []Event) bool {
		return len(filter(evs, func(e *Event) bool { return e.SPort == port && e.NewState == StateClose })) == conns
	})
	for _, e := range evs {
		if e.Cgroup != cg.serverID {
			t.Errorf("let through: cgroup %d: %s", e.Cgroup, e)
		}
	}
	s := c.Stop(t)
	// each client socket: CLOSE->SYN_SENT, ->ESTABLISHED, ->FIN_WAIT1, ->FIN_WAIT2, ->CLOSE
	if s.Filtered < 5*conns {
		t.Errorf("kernel counted %d filtered events, want at least the %d of the clients", s.Filtered, 5*conns)
	}
	if s.Decoded != s.Emitted || s.Emitted != uint64(len(evs)) {
		t.Errorf("decoded %d, emitted %d, received %d: a filtered event crossed the ring buffer", s.Decoded, s.Emitted, len(evs))
	}
}
