package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// Workloads get series of their own only among the K busiest; the rest count in other, which
// with unknown exists from the start. Nothing is lost: at every fold, across membership changes
// and evictions, the series' increases (what rate() sums) add up to the events since the last,
// and no series ever decreases.
func TestWorkloadSeriesBoundedAndMonotonic(t *testing.T) {
	names := fakeNames{
		1: {Cgroup: "/kubepods/besteffort/podA/c1", PodUID: "A", PodNamespace: "shop", Pod: "cart", Container: "web", ContainerID: "c1"},
		2: {Cgroup: "/kubepods/besteffort/podA/c2", PodUID: "A", PodNamespace: "shop", Pod: "cart", Container: "log", ContainerID: "c2"},
		3: {Cgroup: "/kubepods/besteffort/podB/c3", PodUID: "B"}, // no runtime named it
		4: {Cgroup: "/system.slice/demo.service", Unit: "demo.service"},
	}
	const k = 1
	m := newEventMetrics(k, 20)
	m.startAtZero(tracer.AllFamilies, []string{"tcp_abort_on_close"}, []uint32{7})
	win := window.New(time.Now(), nil)
	sink := exporterSink(m, win)
	var since float64 // events since the last fold
	emit := func(cgroup uint64, n int) {
		for range n {
			sink(&tracer.Event{Kind: tracer.KindTWEnter, NetNS: 7, Cgroup: cgroup, Substate: tracer.StateTimeWait})
			since++
		}
	}
	last := map[string]float64{}
	now := time.Unix(1000, 0)
	fold := func() map[string]float64 {
		t.Helper()
		now = now.Add(time.Minute)
		m.fold(win.Restart(now, nil), names, now)
		got := gathered(t, m)
		increase := 0.0
		for _, s := range seriesOf(got, "twtrace_timewait_created_total") {
			increase += got[s] - last[s] // a new series starts from 0
			if got[s] < last[s] {
				t.Errorf("%s went down from %v to %v", s, last[s], got[s])
			}
			last[s] = got[s]
		}
		if increase != since {
			t.Errorf("the created series increased by %v, want the %v events since the last fold: %v", increase, since, got)
		}
		since = 0
		return got
	}
	created := func(namespace, pod, unit string) string {
		return fmt.Sprintf(`twtrace_timewait_created_total{namespace=%q,netns="7",pod=%q,substate="TIME_WAIT",unit=%q}`, namespace, pod, unit)
	}
	workloadSeries := func(got map[string]float64) int {
		n := 0
		for _, s := range seriesOf(got, "twtrace_timewait_created_total") {
			if !strings.Contains(s, `unit="other"`) && !strings.Contains(s, `unit="unknown"`) {
				n++
			}
		}
		return n / len(timewaitSubstates)
	}

	// first fold: nobody is a member yet; cart (two containers, one pod) is the busiest and joins
	emit(1, 5)
	emit(2, 5)
	emit(3, 2)
	emit(0, 1)
	got := fold()
	if got[created("", "", "other")] != 12 || got[created("", "", "unknown")] != 1 || got[created("shop", "cart", "")] != 0 {
		t.Errorf("first fold: %v", got)
	}
	// second: cart counts in its own series; the others in other
	emit(1, 3)
	emit(4, 2)
	got = fold()
	if got[created("shop", "cart", "")] != 3 || got[created("", "", "other")] != 14 || workloadSeries(got) != k {
		t.Errorf("second fold: %v", got)
	}
	// third: demo.service at least twice as busy as cart takes its place; cart's series go
	emit(4, 20)
	emit(1, 1)
	got = fold()
	if got[created("", "", "demo.service")] != 0 || workloadSeries(got) != k {
		t.Errorf("third fold: %v", got)
	}
	if _, ok := got[created("shop", "cart", "")]; ok {
		t.Errorf("an evicted workload's series remain: %v", got)
	}
	delete(last, created("shop", "cart", "")) // gone, not decreased
	emit(4, 4)
	emit(3, 1)
	got = fold()
	if got[created("", "", "demo.service")] != 4 || workloadSeries(got) != k {
		t.Errorf("fourth fold: %v", got)
	}
	// a pod known by its UID only is labelled with it
	if l := labelsOf(names[3], true); l != (workloadLabels{Pod: "B"}) {
		t.Errorf("pod without a name: %+v", l)
	}
	if l := labelsOf(workload.Workload{}, false); l != unknownWorkload {
		t.Errorf("unknown: %+v", l)
	}
}
