package workload

import (
	"fmt"
	"strings"

	"github.com/twtrace/twtrace/internal/cgroup2"
)

// PodCgroup returns the cgroup path of a pod, the parent of its containers' cgroups: ref is
// NAMESPACE/NAME (named by the runtime) or the pod's UID.
func (r *Resolver) PodCgroup(ref string) (string, error) {
	r.refresh.Lock()
	defer r.refresh.Unlock()
	uid := ref
	if ns, name, ok := strings.Cut(ref, "/"); ok {
		if r.o.Pods == nil {
			return "", fmt.Errorf("pod %s: naming a pod by NAMESPACE/NAME needs the node's container runtime (--cri-socket); give its UID instead", ref)
		}
		r.listPods()
		if r.podsErr != nil {
			return "", fmt.Errorf("pod %s: %w", ref, r.podsErr)
		}
		uid = ""
		for _, p := range r.pods.Pods {
			if p.Namespace == ns && p.Name == name {
				uid = p.UID
			}
		}
		if uid == "" {
			return "", fmt.Errorf("no pod %s on this node: the container runtime does not list it", ref)
		}
	}
	return r.shallowest(func(w Workload) bool { return w.PodUID == uid && w.ContainerID == "" },
		func() error { return fmt.Errorf("no cgroup of pod %s (UID %s) on this node", ref, uid) })
}

// ContainerCgroup returns the cgroup path of the container whose id is, or starts with, id.
func (r *Resolver) ContainerCgroup(id string) (string, error) {
	r.refresh.Lock()
	defer r.refresh.Unlock()
	id = strings.ToLower(id)
	var found string
	path, err := r.shallowest(func(w Workload) bool {
		if !strings.HasPrefix(w.ContainerID, id) {
			return false
		}
		if found != "" && found != w.ContainerID {
			found = "ambiguous"
		} else {
			found = w.ContainerID
		}
		return true
	}, func() error { return fmt.Errorf("no cgroup of a container %s on this node", id) })
	if err == nil && found == "ambiguous" {
		return "", fmt.Errorf("container id %s is ambiguous: several containers' ids start with it", id)
	}
	return path, err
}

// shallowest walks the hierarchy for the least deep cgroup whose workload matches.
func (r *Resolver) shallowest(match func(Workload) bool, none func() error) (string, error) {
	if r.o.Hierarchy == nil {
		return "", cgroup2.ErrNotMounted
	}
	best := ""
	err := r.o.Hierarchy.Walk(func(p string, _ uint64) {
		if match(Parse(p)) && (best == "" || cgroup2.Level(p) < cgroup2.Level(best)) {
			best = p
		}
	})
	if err != nil {
		return "", fmt.Errorf("walk the cgroup2 hierarchy: %w", err)
	}
	if best == "" {
		return "", none()
	}
	return best, nil
}
