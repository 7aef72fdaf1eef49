package main

import (
	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// workloadNames are a workload's names in the views' JSON, each only when it applies, as in
// watch's events (README, "Workloads").
type workloadNames struct {
	Name         string `json:"name"`
	Cgroup       string `json:"cgroup,omitempty"`
	Unit         string `json:"unit,omitempty"`
	ContainerID  string `json:"container_id,omitempty"`
	PodUID       string `json:"pod_uid,omitempty"`
	PodNamespace string `json:"pod_namespace,omitempty"`
	Pod          string `json:"pod,omitempty"`
	Container    string `json:"container,omitempty"`
}

func namesOf(w workload.Workload) *workloadNames {
	return &workloadNames{Name: w.Name(), Cgroup: w.Cgroup, Unit: w.Unit, ContainerID: w.ContainerID, PodUID: w.PodUID,
		PodNamespace: w.PodNamespace, Pod: w.Pod, Container: w.Container}
}

// namespaceNames names the pod holding a namespace; null when none does.
func namespaceNames(names map[uint32]workload.Workload, inode uint32) *workloadNames {
	if w, ok := names[inode]; ok {
		return namesOf(w)
	}
	return nil
}

// workloadJSON is one workload row; a count whose event family was not traced is null.
type workloadJSON struct {
	Workload    *workloadNames `json:"workload"` // null: unknown
	NetNS       uint32         `json:"netns"`
	TimeWaitNow *uint64        `json:"timewait_now"`
	Created     *uint64        `json:"created"`
	Rate        *float64       `json:"created_per_s"`
	Overflows   *uint64        `json:"overflows"`
	ResetsSent  *uint64        `json:"resets_sent"`
	ResetsRecv  *uint64        `json:"resets_recv"`
	// the connect()s it called that failed, by errno name; null when connect events are not traced
	ConnectFailures map[string]uint64 `json:"connect_failures"`
	// null without tw events, or when the namespace's table could not be read
	Forecast *tableForecast `json:"timewait_table_forecast"`
}

// tableForecast is the namespace's timewait table under one workload's creation rate alone.
type tableForecast struct {
	AtRisk      bool     `json:"at_risk"`
	SteadyState float64  `json:"steady_state"`
	FullInS     *float64 `json:"full_in_s"` // when at risk
}

func workloadRowJSON(r workloadRow, traced tracer.Families) workloadJSON {
	j := workloadJSON{NetNS: r.NetNS}
	if r.Known {
		j.Workload = namesOf(r.W)
	}
	if traced&tracer.FamilyTW != 0 {
		j.TimeWaitNow, j.Created, j.Rate = &r.TimeWaitNow, &r.Created, &r.Rate
		if r.ForecastKnown {
			f := tableForecast{AtRisk: r.Forecast.Full, SteadyState: r.Forecast.SteadyState}
			if f.AtRisk {
				s := r.Forecast.FullIn.Seconds()
				f.FullInS = &s
			}
			j.Forecast = &f
		}
	}
	if traced&tracer.FamilyOverflow != 0 {
		j.Overflows = &r.Overflows
	}
	if traced&tracer.FamilyReset != 0 {
		j.ResetsSent, j.ResetsRecv = &r.ResetsSent, &r.ResetsRecv
	}
	if traced&tracer.FamilyConnect != 0 {
		j.ConnectFailures = r.ConnectFails
		if j.ConnectFailures == nil {
			j.ConnectFailures = map[string]uint64{}
		}
	}
	return j
}
