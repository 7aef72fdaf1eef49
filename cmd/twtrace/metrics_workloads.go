package main

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// workloadLabels are a workload's labels on the exporter's series (README, "Metrics"): namespace
// and pod for a Kubernetes pod (pod alone, its UID, when no container runtime named it), unit
// otherwise: a systemd unit, runtime:id for another container, else the cgroup path. Series are
// per pod, not per container, to keep them few.
type workloadLabels struct{ Namespace, Pod, Unit string }

var (
	// otherWorkloads holds what workloads outside the top K did; unknownWorkload what sockets
	// of no known cgroup did. Both exist from the start, in every namespace.
	otherWorkloads  = workloadLabels{Unit: "other"}
	unknownWorkload = workloadLabels{Unit: "unknown"}
	reservedSeries  = []workloadLabels{otherWorkloads, unknownWorkload}
)

func labelsOf(w workload.Workload, known bool) workloadLabels {
	switch {
	case !known || w.Name() == "":
		return unknownWorkload
	case w.Pod != "":
		return workloadLabels{Namespace: w.PodNamespace, Pod: w.Pod}
	case w.PodUID != "":
		return workloadLabels{Pod: w.PodUID}
	}
	return workloadLabels{Unit: w.Name()}
}

// heldByLabels are the labels of the workload holding a network namespace, all empty for one no
// single workload holds (the host's).
func heldByLabels(names namer, inode uint32) workloadLabels {
	if names == nil {
		return workloadLabels{}
	}
	w, ok := names.netns(inode)
	if !ok {
		return workloadLabels{}
	}
	return labelsOf(w, true)
}

// key orders the labels for topk.
func (l workloadLabels) key() string { return l.Namespace + "\x00" + l.Pod + "\x00" + l.Unit }

func labelsOfKey(k string) workloadLabels {
	var l workloadLabels
	parts := [3]*string{&l.Namespace, &l.Pod, &l.Unit}
	i := 0
	for j := 0; j < len(k); j++ {
		if k[j] == 0 {
			i++
			continue
		}
		*parts[i] += string(k[j])
	}
	return l
}

func (l workloadLabels) prometheus() prometheus.Labels {
	return prometheus.Labels{"namespace": l.Namespace, "pod": l.Pod, "unit": l.Unit}
}

// workloadIdle is how long a workload keeps its own series without activity.
const workloadIdle = 15 * time.Minute

// fold adds what a window counted per cgroup to the workload series: a workload among the K
// busiest (topk) counts in its own, every other in the other series, so cardinality stays
// bounded and every counter stays monotonic. It names the cgroups (names may be nil), so the
// event reader never calls it.
func (m *eventMetrics) fold(a *window.Aggregate, names namer, now time.Time) {
	labels := map[window.CgroupKey]workloadLabels{}
	activity := map[workloadLabels]uint64{}
	netnsOf := map[workloadLabels]map[uint32]bool{}
	for k, c := range a.ByCgroup {
		l := unknownWorkload
		if names != nil && k.Cgroup != 0 {
			l = labelsOf(names.cgroup(k.Cgroup))
		}
		labels[k] = l
		activity[l] += c.Created() + c.Overflows + c.ResetsSent() + c.ResetsRecv() + c.ConnectFailures()
		if netnsOf[l] == nil {
			netnsOf[l] = map[uint32]bool{}
		}
		netnsOf[l][k.NetNS] = true
	}
	member := map[workloadLabels]bool{unknownWorkload: true}
	for l, n := range activity {
		if l != unknownWorkload {
			member[l] = m.limiter.Count(l.key(), n)
		}
	}
	// a workload leaving now takes its series with it: this fold's counts go to other; one
	// joining now counts in its own from the next fold, which starts at 0
	left, joined := m.limiter.Rebalance(now)
	for _, k := range left {
		member[labelsOfKey(k)] = false
	}
	for k, c := range a.ByCgroup {
		l := labels[k]
		if !member[l] {
			l = otherWorkloads
		}
		netns := strconv.FormatUint(uint64(k.NetNS), 10)
		if c.CreatedTimeWait > 0 {
			m.created.WithLabelValues(netns, tracer.StateTimeWait.String(), l.Namespace, l.Pod, l.Unit).Add(float64(c.CreatedTimeWait))
		}
		if c.CreatedFinWait2 > 0 {
			m.created.WithLabelValues(netns, tracer.StateFinWait2.String(), l.Namespace, l.Pod, l.Unit).Add(float64(c.CreatedFinWait2))
		}
		if c.Overflows > 0 {
			m.overflow.WithLabelValues(netns, l.Namespace, l.Pod, l.Unit).Add(float64(c.Overflows))
		}
		for r, n := range c.Resets {
			dir, reason := resetLabels(r.Recv, r.Reason)
			m.resets.WithLabelValues(dir, reason, l.Namespace, l.Pod, l.Unit).Add(float64(n))
		}
		for errno, n := range c.ConnectFails {
			m.connect.WithLabelValues(netns, errno, l.Namespace, l.Pod, l.Unit).Add(float64(n))
		}
	}
	m.foldDestinations(a, names)
	for _, k := range left {
		l := labelsOfKey(k).prometheus()
		m.created.DeletePartialMatch(l)
		m.overflow.DeletePartialMatch(l)
		m.resets.DeletePartialMatch(l)
		m.connect.DeletePartialMatch(l)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range joined {
		l := labelsOfKey(k)
		for inode := range netnsOf[l] {
			m.workloadAtZero(strconv.FormatUint(uint64(inode), 10), l)
		}
		m.resetsAtZero(l)
	}
}

func resetLabels(recv bool, reason string) (direction, label string) {
	if recv {
		return "recv", "none"
	}
	return "sent", reason
}
