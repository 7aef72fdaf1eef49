package main

import (
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// fakeNames names cgroups from a table, and no namespace.
type fakeNames map[uint64]workload.Workload

func (f fakeNames) cgroup(id uint64) (workload.Workload, bool) { w, ok := f[id]; return w, ok }
func (fakeNames) netns(uint32) (workload.Workload, bool)       { return workload.Workload{}, false }

// Cgroups naming one workload add up per namespace; an unknown cgroup and cgroup 0 are one
// "unknown" row; the forecast is the namespace's table under the workload's rate alone.
func TestWorkloadRows(t *testing.T) {
	web := workload.Workload{Cgroup: "/kubepods/besteffort/podU/c1", PodUID: "U", PodNamespace: "shop", Pod: "cart", Container: "web", ContainerID: "c1"}
	names := fakeNames{
		1: web,
		2: web, // the same container's cgroup seen again under another id (a child)
		3: {Cgroup: "/system.slice/demo.service", Unit: "demo.service"},
	}
	since := time.Unix(1000, 0)
	a := window.NewAggregate(since)
	add := func(kind tracer.Kind, cgroup uint64, netns uint32, n int) {
		for range n {
			a.Add(&tracer.Event{Kind: kind, Cgroup: cgroup, NetNS: netns, Substate: tracer.StateTimeWait})
		}
	}
	add(tracer.KindTWEnter, 1, 7, 6)
	add(tracer.KindTWEnter, 2, 7, 4)
	add(tracer.KindTWOverflow, 2, 7, 1)
	add(tracer.KindTWEnter, 3, 7, 1)
	add(tracer.KindTWEnter, 3, 8, 2)
	add(tracer.KindReset, 0, 7, 1)
	add(tracer.KindReset, 99, 7, 2) // a cgroup no longer found
	snaps := map[uint32]*snapshot.Namespace{7: {TimeWaitTable: 50, Limits: snapshot.Limits{MaxTWBuckets: 100}}}

	rows := workloadRows(a, names, snaps, since.Add(10*time.Second))
	if len(rows) != 4 {
		t.Fatalf("%d rows, want cart/web, demo.service in two namespaces, unknown: %+v", len(rows), rows)
	}
	cart := rows[0]
	if cart.Name() != "shop/cart/web" || cart.NetNS != 7 || cart.TimeWaitNow != 10 || cart.Created != 10 || cart.Overflows != 1 || cart.Rate != 1 {
		t.Errorf("first row %+v, want shop/cart/web with both cgroups' 10 sockets", cart)
	}
	// 1/s for 60 s settles at 60, below 100: not at risk
	if !cart.ForecastKnown || cart.Forecast.AtRisk || cart.Forecast.SteadyState != 60 {
		t.Errorf("forecast %+v", cart.Forecast)
	}
	if r := rows[1]; r.Name() != "demo.service" || r.NetNS != 8 || r.Created != 2 || r.ForecastKnown {
		t.Errorf("second row %+v, want demo.service in netns 8, its table unread", r)
	}
	if r := rows[2]; r.Name() != "demo.service" || r.NetNS != 7 || r.Created != 1 {
		t.Errorf("third row %+v", r)
	}
	if r := rows[3]; r.Name() != "unknown" || r.Known || r.ResetsSent != 3 {
		t.Errorf("last row %+v, want the unknown workload's 3 resets", r)
	}
	if rows := workloadRows(a, nil, nil, since.Add(10*time.Second)); len(rows) != 2 || rows[0].Name() != "unknown" || rows[0].Created != 11 {
		t.Errorf("without names: %+v, want everything unknown, per namespace", rows)
	}
}
