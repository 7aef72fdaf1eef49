package workload

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

type nsEntry struct {
	w    Workload
	pid  int  // a process in the namespace when it was scanned
	ok   bool // false: several workloads share it, or none holds it
	none bool // only host processes hold it
}

// Netns returns the workload whose processes hold network namespace inode: a pod (its containers
// share one) or a container outside Kubernetes. False for the host's namespace (host-network pods
// share it with everything else), one shared by several workloads, or one no process holds. A
// namespace's inode can be reused once it is gone, so an answer is checked against a process still
// in it, and /proc is scanned again (at most once per MinRefresh) when that fails. A namespace no
// single workload holds stays so for RetryUnknown: listing many such namespaces scans /proc once.
func (r *Resolver) Netns(inode uint64) (Workload, bool) {
	r.refresh.Lock()
	defer r.refresh.Unlock()
	if e, ok := r.netns[inode]; ok && r.netnsOf(e.pid) == inode && (e.ok || r.o.Now().Sub(r.lastScan) < r.o.RetryUnknown) {
		return e.w, e.ok
	}
	if inode == initNetns || inode == 0 {
		return Workload{}, false
	}
	r.scanNetns()
	e, ok := r.netns[inode]
	return e.w, ok && e.ok
}

// initNetns is PROC_NET_INIT_INO (include/linux/proc_ns.h): the host's network namespace has this
// inode on every kernel since 3.8. (/proc/1/ns/net would say so too, but may not be readable.)
const initNetns = 0xEFFFFFF9

// scanNetns finds, for every process outside the host's network namespace, the pod or container
// its cgroup names.
func (r *Resolver) scanNetns() {
	r.spaced(&r.lastScan)
	r.netnsScans.Add(1)
	dirs, err := os.ReadDir(r.o.ProcRoot)
	if err != nil {
		return
	}
	found := make(map[uint64]nsEntry)
	ambiguous := uint64(0)
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		ns := r.netnsOf(pid)
		if ns == 0 || ns == initNetns {
			continue
		}
		w := r.processWorkload(pid)
		if w.PodUID != "" {
			w = Workload{PodUID: w.PodUID}
		} else if w.ContainerID != "" {
			w = Workload{Runtime: w.Runtime, ContainerID: w.ContainerID}
		} else {
			// a host process that entered the namespace (ip netns exec, nsenter)
			if _, seen := found[ns]; !seen {
				found[ns] = nsEntry{pid: pid, none: true}
			}
			continue
		}
		prev, seen := found[ns]
		switch {
		case !seen || prev.none:
			found[ns] = nsEntry{w: w, pid: pid, ok: true}
		case prev.ok && prev.w != w:
			found[ns] = nsEntry{pid: pid}
			ambiguous++
		}
	}
	for ns, e := range found {
		if e.ok {
			r.name(&e.w)
			found[ns] = e
		}
	}
	r.netns = found
	r.ambiguous.Store(ambiguous)
}

// processWorkload parses each hierarchy's path in /proc/PID/cgroup: on hosts without a v2 hierarchy
// (or with processes left in its root) a v1 controller's path still names the pod.
func (r *Resolver) processWorkload(pid int) Workload {
	f, err := os.Open(filepath.Join(r.o.ProcRoot, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return Workload{}
	}
	defer f.Close()
	var v2 Workload
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-id:controllers:path
		_, rest, _ := strings.Cut(sc.Text(), ":")
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		w := Parse(path)
		if w.PodUID != "" || w.ContainerID != "" {
			return w
		}
		if controllers == "" {
			v2 = w
		}
	}
	return v2
}

func (r *Resolver) netnsOf(pid int) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(r.o.ProcRoot, strconv.Itoa(pid), "ns", "net"), &st); err != nil {
		return 0
	}
	return st.Ino
}
