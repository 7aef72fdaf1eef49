package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/twtrace/twtrace/internal/cgroup2"
	"github.com/twtrace/twtrace/internal/cri"
	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// workloadFlags name the workload behind each socket and filter by it.
type workloadFlags struct {
	cgroup    string
	pod       string
	container string
	criSocket string
	top       int
}

// defaultTopWorkloads is --top-workloads' default.
const defaultTopWorkloads = 20

// register adds the workload flags of groups (groupWorkloadFilters, groupNames, groupTopWorkloads).
func (f *workloadFlags) register(fs *flag.FlagSet, groups flagGroup) {
	f.top = defaultTopWorkloads
	if groups&groupWorkloadFilters != 0 {
		fs.StringVar(&f.cgroup, "cgroup", "", "only sockets created in this cgroup (v2) or below it: its path as /proc/PID/cgroup shows it (/system.slice/nginx.service) or its directory under the cgroup2 mount")
		fs.StringVar(&f.pod, "pod", "", "only sockets of this Kubernetes pod: NAMESPACE/NAME (needs the container runtime) or its UID")
		fs.StringVar(&f.container, "container", "", "only sockets of this container: its id or a unique prefix of it")
	}
	if groups&groupNames != 0 {
		fs.StringVar(&f.criSocket, "cri-socket", "", "the container runtime's CRI socket, to name pods and containers (default: the first of "+strings.Join(cri.Sockets, ", ")+" that exists)")
	}
	if groups&groupTopWorkloads != 0 {
		usage := "workloads to list, the busiest first"
		if fs.Name() == "serve" {
			usage = "workloads with series of their own, the busiest; the others share one series (unit=\"other\"), so cardinality stays bounded"
		}
		fs.IntVar(&f.top, "top-workloads", f.top, usage)
	}
}

// filters reports whether a workload filter is given.
func (f *workloadFlags) filters() bool { return f.cgroup != "" || f.pod != "" || f.container != "" }

// validate checks what the flags say on their own.
func (f *workloadFlags) validate() error {
	n := 0
	for _, v := range []string{f.cgroup, f.pod, f.container} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		return usagef("--cgroup, --pod and --container each choose one subtree: give one of them")
	}
	if ns, name, ok := strings.Cut(f.pod, "/"); ok && (ns == "" || name == "" || strings.Contains(name, "/")) {
		return usagef("--pod %q: want NAMESPACE/NAME or the pod's UID", f.pod)
	}
	if f.container != "" && strings.Trim(strings.ToLower(f.container), "0123456789abcdef") != "" {
		return usagef("--container %q: a container id is hexadecimal", f.container)
	}
	if f.top < 1 {
		return usagef("--top-workloads %d: list at least one workload", f.top)
	}
	return nil
}

// namer names the cgroups and network namespaces events carry: live, the resolver (a miss may
// walk the cgroup tree, scan /proc or ask the container runtime, so the event reader never calls
// it); replaying, the names the recording holds.
type namer interface {
	cgroup(id uint64) (workload.Workload, bool)
	netns(inode uint32) (workload.Workload, bool)
}

// workloads names what runs on this machine.
type workloads struct {
	names   *workload.Resolver
	cgroups bool        // false without a cgroup v2 hierarchy: every cgroup stays unknown
	pods    *cri.Client // nil without a container runtime
}

// open finds the cgroup v2 hierarchy and the container runtime, says once what is missing, and
// turns --cgroup, --pod or --container into the kernel's subtree filter.
func (f *workloadFlags) open(log zerolog.Logger) (*workloads, tracer.CgroupFilter, error) {
	var filter tracer.CgroupFilter
	w := &workloads{}
	h, err := cgroup2.Find()
	if err != nil && f.filters() {
		return nil, filter, fmt.Errorf("--cgroup, --pod and --container need a cgroup v2 hierarchy: %w", err)
	}
	if err := w.dialRuntime(f.criSocket, f.pod, log); err != nil {
		return nil, filter, err
	}
	o := workload.Options{}
	if w.pods != nil {
		o.Pods = w.pods
	}
	if err != nil {
		log.Warn().Msgf("%v: workloads stay unknown (network namespaces are still named by their pods)", err)
		w.names = workload.New(o)
		return w, filter, nil
	}
	o.Hierarchy, w.cgroups = &h, true
	w.names = workload.New(o)

	path := f.cgroup
	switch {
	case f.pod != "":
		if path, err = w.names.PodCgroup(f.pod); err != nil {
			w.Close()
			return nil, filter, fmt.Errorf("--pod: %w", err)
		}
	case f.container != "":
		if path, err = w.names.ContainerCgroup(f.container); err != nil {
			w.Close()
			return nil, filter, fmt.Errorf("--container: %w", err)
		}
	}
	if path != "" {
		p, id, err := h.Lookup(path)
		if err != nil {
			w.Close()
			return nil, filter, usagef("--cgroup: %s", err)
		}
		filter = tracer.CgroupFilter{ID: id, Level: uint32(cgroup2.Level(p))}
		log.Debug().Str("cgroup", p).Uint64("id", id).Msg("keeping this cgroup's subtree")
	}
	return w, filter, nil
}

// openNamespaces names network namespaces only, by the pods that hold them: for stat, which
// reads sock_diag and no cgroup ids.
func (f *workloadFlags) openNamespaces() (*workloads, error) {
	w := &workloads{}
	if err := w.dialRuntime(f.criSocket, "", zerolog.Nop()); err != nil {
		return nil, err
	}
	o := workload.Options{}
	if w.pods != nil {
		o.Pods = w.pods
	}
	w.names = workload.New(o)
	return w, nil
}

// dialRuntime connects to --cri-socket (which must answer) or to the first usual socket found.
func (w *workloads) dialRuntime(socket, pod string, log zerolog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if socket != "" {
		c, err := cri.Dial(ctx, socket)
		if err != nil {
			return fmt.Errorf("--cri-socket: %w", err)
		}
		w.pods = c
	} else if found, err := cri.Detect(); err == nil {
		c, err := cri.Dial(ctx, found)
		if err != nil {
			log.Warn().Msgf("%v: pods are named by UID only", err)
		}
		w.pods = c
	} else if errors.Is(err, cri.ErrNoSocket) {
		log.Debug().Msgf("%v: pods are named by UID only", err)
	}
	if w.pods != nil {
		log.Debug().Str("socket", w.pods.Socket).Str("runtime", w.pods.Runtime).Msg("naming pods through the container runtime")
	} else if strings.Contains(pod, "/") {
		return fmt.Errorf("--pod %s: naming a pod needs the container runtime, and none answered (--cri-socket); give the pod's UID instead", pod)
	}
	return nil
}

// Close disconnects from the runtime.
func (w *workloads) Close() {
	if w != nil && w.pods != nil {
		w.pods.Close()
	}
}

// cgroup names an event's cgroup id.
func (w *workloads) cgroup(id uint64) (workload.Workload, bool) {
	if w == nil || !w.cgroups || id == 0 {
		return workload.Workload{}, false
	}
	return w.names.Cgroup(id)
}

// cgroupNow names an event's cgroup where that needs no lookup; ready is false where cgroup
// would look it up.
func (w *workloads) cgroupNow(id uint64) (named workload.Workload, known, ready bool) {
	if w == nil || !w.cgroups || id == 0 {
		return workload.Workload{}, false, true
	}
	return w.names.CgroupNow(id)
}

// netns names the pod (or container) that holds a network namespace of its own.
func (w *workloads) netns(inode uint32) (workload.Workload, bool) {
	if w == nil || w.names == nil {
		return workload.Workload{}, false
	}
	return w.names.Netns(uint64(inode))
}

// recorded is --cgroup, --pod or --container applied to the names a recording holds (nil: no
// workload filter). An unknown workload never matches.
func (f *workloadFlags) recorded() func(workload.Workload, bool) bool {
	switch {
	case f.cgroup != "":
		path := strings.TrimSuffix(f.cgroup, "/")
		return func(w workload.Workload, known bool) bool {
			return known && (w.Cgroup == path || strings.HasPrefix(w.Cgroup, path+"/") || path == "")
		}
	case f.pod != "":
		ns, name, named := strings.Cut(f.pod, "/")
		return func(w workload.Workload, known bool) bool {
			if named {
				return known && w.PodNamespace == ns && w.Pod == name
			}
			return known && strings.EqualFold(w.PodUID, f.pod)
		}
	case f.container != "":
		prefix := strings.ToLower(f.container)
		return func(w workload.Workload, known bool) bool {
			return known && w.ContainerID != "" && strings.HasPrefix(w.ContainerID, prefix)
		}
	}
	return nil
}
