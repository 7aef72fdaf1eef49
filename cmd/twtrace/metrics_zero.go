package main

import (
	"strconv"

	"github.com/twtrace/twtrace/tracer"
)

// Series whose label values are known before any event exist from the first scrape at 0,
// so that rate(), increase() and the alert rules count the first event. A namespace's
// series are created when serve starts for --netns (or twtrace's own namespace), and for
// any other namespace with the first event from it, for the other and unknown workloads; a
// workload's own series are created when it joins the top K (what it did until then is in
// other's).

// timewaitSubstates are the substates a timewait socket can have.
var timewaitSubstates = []tracer.State{tracer.StateTimeWait, tracer.StateFinWait2}

// lifetimeCause is the cause label of twtrace_timewait_lifetime_seconds: the cause, and
// what killed the socket where the backend can tell.
func lifetimeCause(c tracer.Cause, d tracer.Detail) string {
	if d.String() == "" {
		return c.String()
	}
	return c.String() + "_" + d.String()
}

// lifetimeCauses are every value lifetimeCause takes.
var lifetimeCauses = []string{
	lifetimeCause(tracer.CauseExpired, tracer.DetailNone),
	lifetimeCause(tracer.CauseKilled, tracer.DetailNone),
	lifetimeCause(tracer.CauseKilled, tracer.DetailSYN),
	lifetimeCause(tracer.CauseKilled, tracer.DetailRST),
	lifetimeCause(tracer.CauseKilled, tracer.DetailReuse),
	lifetimeCause(tracer.CauseKilled, tracer.DetailNetnsExit),
}

// connectErrnos are the errnos a failed connect() usually carries (the README's list),
// whose namespace series start at 0; any other appears with its first failure.
var connectErrnos = []string{"EADDRNOTAVAIL", "ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "unknown"}

// startAtZero creates, at 0, the series of the families delivered (fs) whose labels are
// known now: resets by direction and reason (reasons: those a sent reset can carry
// here), lifetimes by substate and cause, and the namespace series of namespaces. A
// family that is not traced gets none: it is never shown as zero.
func (m *eventMetrics) startAtZero(fs tracer.Families, reasons []string, namespaces []uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.families, m.reasons = fs, reasons
	for _, l := range reservedSeries {
		m.resetsAtZero(l)
	}
	if fs&tracer.FamilyTW != 0 {
		for _, s := range timewaitSubstates {
			for _, c := range lifetimeCauses {
				m.lifetime.WithLabelValues(s.String(), c)
			}
		}
	}
	for _, ns := range namespaces {
		m.namespaceAtZero(ns)
	}
}

// namespaceAtZero creates a namespace's series at 0, once. m.mu is held.
func (m *eventMetrics) namespaceAtZero(ns uint32) {
	if m.zeroed[ns] {
		return
	}
	if m.zeroed == nil {
		m.zeroed = map[uint32]bool{}
	}
	m.zeroed[ns] = true
	for _, l := range reservedSeries {
		m.workloadAtZero(strconv.FormatUint(uint64(ns), 10), l)
	}
}

// workloadAtZero creates a workload's series in a namespace at 0. m.mu is held.
func (m *eventMetrics) workloadAtZero(netns string, l workloadLabels) {
	if m.families&tracer.FamilyTW != 0 {
		for _, s := range timewaitSubstates {
			m.created.WithLabelValues(netns, s.String(), l.Namespace, l.Pod, l.Unit)
		}
	}
	if m.families&tracer.FamilyOverflow != 0 {
		m.overflow.WithLabelValues(netns, l.Namespace, l.Pod, l.Unit)
	}
	if m.families&tracer.FamilyConnect != 0 {
		for _, errno := range connectErrnos {
			m.connect.WithLabelValues(netns, errno, l.Namespace, l.Pod, l.Unit)
		}
	}
}

// resetsAtZero creates a workload's reset series at 0, by direction and known reason. m.mu is held.
func (m *eventMetrics) resetsAtZero(l workloadLabels) {
	if m.families&tracer.FamilyReset == 0 {
		return
	}
	for _, r := range m.reasons {
		m.resets.WithLabelValues("sent", r, l.Namespace, l.Pod, l.Unit)
	}
	m.resets.WithLabelValues("recv", "none", l.Namespace, l.Pod, l.Unit)
}
