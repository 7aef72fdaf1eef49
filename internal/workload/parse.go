// Package workload names what runs in a cgroup: a systemd unit, a container (runtime and id), a
// Kubernetes pod (UID from the cgroup path; namespace, name and container name from the node's
// container runtime), and resolves the cgroup ids and network namespaces that events carry to it,
// through caches that stay off the event reader's path.
package workload

import (
	"regexp"
	"strings"
)

// Workload is what runs in one cgroup. Fields not known are empty: nothing is guessed.
type Workload struct {
	Cgroup      string // cgroup v2 path, as /proc/PID/cgroup shows it
	Unit        string // systemd unit (service, scope, …) when the cgroup is not a container's
	Runtime     string // container runtime the cgroup name shows: docker, containerd, cri-o, podman
	ContainerID string // full container id
	PodUID      string // Kubernetes pod UID (dashes, as the API shows it)
	// From the container runtime's CRI API; empty without one, and for a pod's sandbox container.
	PodNamespace, Pod, Container string
}

// Kubelet names a pod's cgroup pod<uid> (cgroupfs driver) or <parent>-pod<uid with _ for ->.slice
// (systemd driver), under a kubepods parent; the QoS class sits between them except for Guaranteed pods.
var (
	podSystemd  = regexp.MustCompile(`^(?:[a-z0-9_.]+-)?kubepods(?:-(?:besteffort|burstable))?-pod([0-9a-fA-F_]+)\.slice$`)
	podCgroupfs = regexp.MustCompile(`^pod([0-9a-fA-F-]+)$`)
	// <runtime>-<id>.scope (systemd driver); crio-<id> and libpod-<id> are also the cgroupfs names of
	// CRI-O and podman; a bare id is the cgroupfs name of docker, containerd and moby's children.
	containerScope = regexp.MustCompile(`^(docker|cri-containerd|crio|libpod)-([0-9a-f]{64})(?:\.scope)?$`)
	bareID         = regexp.MustCompile(`^[0-9a-f]{64}$`)
	unitSuffixes   = []string{".service", ".scope", ".socket", ".mount", ".swap"}
)

var runtimes = map[string]string{"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o", "libpod": "podman"}

// Parse names the workload from a cgroup path alone: the unit, the container's runtime and id,
// the pod's UID. Under a kubelet's pod cgroup, the container is the first one below it (so pods of
// kind-like nodes, which are containers themselves, are named as pods); elsewhere the outermost
// container is the workload (one started inside another belongs to it).
func Parse(cgroupPath string) Workload {
	w := Workload{Cgroup: cgroupPath}
	segments := strings.Split(strings.Trim(cgroupPath, "/"), "/")
	containers := segments
	if i, uid := podSegment(segments); i >= 0 {
		w.PodUID, containers = uid, segments[i+1:]
	}
	for i, s := range containers {
		if m := containerScope.FindStringSubmatch(s); m != nil {
			w.Runtime, w.ContainerID = runtimes[m[1]], m[2]
			break
		}
		if bareID.MatchString(s) {
			w.ContainerID = s
			if i > 0 && containers[i-1] == "docker" {
				w.Runtime = "docker"
			}
			break
		}
	}
	if w.ContainerID == "" && w.PodUID == "" {
		w.Unit = innermostUnit(segments)
	}
	return w
}

// podSegment finds the kubelet's pod cgroup: its index and the pod UID, or -1.
func podSegment(segments []string) (int, string) {
	underKubepods := false
	for i, s := range segments {
		if m := podSystemd.FindStringSubmatch(s); m != nil {
			return i, strings.ReplaceAll(m[1], "_", "-")
		}
		if strings.Contains(s, "kubepods") {
			underKubepods = true
		} else if m := podCgroupfs.FindStringSubmatch(s); m != nil && underKubepods {
			return i, m[1]
		}
	}
	return -1, ""
}

func innermostUnit(segments []string) string {
	for i := len(segments) - 1; i >= 0; i-- {
		for _, suffix := range unitSuffixes {
			if strings.HasSuffix(segments[i], suffix) && len(segments[i]) > len(suffix) {
				return segments[i]
			}
		}
	}
	return ""
}

// Name is the workload's short name: namespace/pod/container (namespace/pod for the pod's own
// cgroup), the pod UID when the runtime did not name it, the systemd unit, runtime:id (12 digits)
// for another container, else the cgroup path; "" when nothing is known.
func (w Workload) Name() string {
	switch {
	case w.Pod != "" && w.Container != "":
		return w.PodNamespace + "/" + w.Pod + "/" + w.Container
	case w.Pod != "":
		return w.PodNamespace + "/" + w.Pod
	case w.PodUID != "":
		return "pod:" + w.PodUID
	case w.Unit != "":
		return w.Unit
	case w.ContainerID != "":
		rt := w.Runtime
		if rt == "" {
			rt = "container"
		}
		return rt + ":" + w.ContainerID[:min(12, len(w.ContainerID))]
	}
	return w.Cgroup
}
