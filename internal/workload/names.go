package workload

import "github.com/twtrace/twtrace/internal/cri"

// nameFrom fills in w's pod namespace and name and container name from a runtime's listing; false if
// the runtime does not know all of them (a pod or container it did not list, or not one of its own).
func nameFrom(s cri.Snapshot, w *Workload) bool {
	complete := true
	if w.ContainerID != "" {
		if c, ok := s.Containers[w.ContainerID]; ok {
			w.Container = c.Name
			if w.PodUID == "" {
				w.PodUID = c.PodUID
			}
		} else if uid, ok := s.Sandboxes[w.ContainerID]; ok {
			// The pod's sandbox: the pod is known, the container has no name of its own.
			if w.PodUID == "" {
				w.PodUID = uid
			}
		} else {
			complete = false
		}
	}
	if w.PodUID != "" {
		if p, ok := s.Pods[w.PodUID]; ok {
			w.PodNamespace, w.Pod = p.Namespace, p.Name
		} else {
			complete = false
		}
	}
	return complete
}
